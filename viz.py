"""Explain a trained checkpoint: curves, mistakes, class activation maps and the evidence for them
(faithfulness with intervals, a random-map baseline, a sanity check), confusion, attacks; docs/explain.md.

  python viz.py --checkpoint runs/resnet18/last.pt              # everything, into runs/resnet18/viz/
  python viz.py --checkpoint RUN/best.pt --layer layer2 --method gradcam eigencam
  python viz.py --checkpoint RUN/last.pt --faithfulness-images 500 --sanity-images 100   # which map to believe
  python viz.py --checkpoint RUN/last.pt --adversarial --attack pgd --eps 8

It never trains and writes nothing outside --out. The test set goes through the DALI eval pipeline with
the checkpoint's normalisation, as in training; the model is rebuilt uncompiled, in float32. The same
pictures in a notebook: explain.Explanation (this script saves what its methods return).
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import cli, device as devices
from common.cli import UsageError, option
from common.files import atomic_write, write_text
from explain import Explanation, attacks, report
from explain.cams import METHODS, check_methods
from explain.evaluation import CPU_TEST_IMAGES
from explain.explanation import (DEFAULT_METHODS, FAITHFULNESS_IMAGES, METHOD_IMAGES, SANITY_IMAGES, check_count,
                                 comparison_sizes)


@dataclass
class Options:
    checkpoint: str = option("", "a .pt file written by train.py", required=True)
    out: str = option("", "output folder (default: viz/ next to the checkpoint)")
    data_dir: str = option("", "dataset folder (default: the one the run trained on)")
    n: int = option(10, f"images per gallery (methods.png: the first {METHOD_IMAGES})")
    layer: str = option("layer3", "where the CAMs look (layer3 is 8x8 on CIFAR)")
    method: tuple = option(DEFAULT_METHODS, f"CAM methods to compare, of {', '.join(METHODS)} "
                                            f"(default: {' '.join(DEFAULT_METHODS)})", nargs="+", type=str)
    device: str = option("auto", "where to run", choices=devices.CHOICES)
    adversarial: bool = option(False, "attack correctly classified images")
    attack: str = option(None, "with --adversarial: fgsm or pgd (default fgsm)", choices=attacks.KINDS)
    eps: float = option(None, "with --adversarial: attack budget in pixel units /255 (default 8)")
    limit_test: int = option(None, "use N test images, every class kept in its share (as train.py's "
                                   f"--limit-test); 0: all (default: all on a GPU, {CPU_TEST_IMAGES} on the CPU, "
                                   "where all 10,000 take minutes)")
    faithfulness_images: int = option(
        None, "rank the --method maps by ROAD on N of the test images (every class in its share), with "
              "95 %% intervals and a random-map baseline; 0: leave it out (default: "
              f"{FAITHFULNESS_IMAGES['cuda']} on a GPU, {FAITHFULNESS_IMAGES['cpu']} on the CPU, where "
              "ScoreCAM alone costs seconds an image)")
    sanity_images: int = option(
        None, "the model-randomisation sanity check on N of those images; 0: leave it out (default: "
              f"{SANITY_IMAGES['cuda']} on a GPU, {SANITY_IMAGES['cpu']} on the CPU)")

    def check(self):
        """Every flag checked before the long work, by the checks the Python API makes."""
        self.method = check_methods(self.method)
        if (self.attack or self.eps is not None) and not self.adversarial:
            raise UsageError("--attack and --eps set up --adversarial: add it, or drop them")
        self.attack, self.eps = self.attack or "fgsm", 8.0 if self.eps is None else self.eps
        attacks.check(self.attack, self.eps)
        check_count(self.n)  # --device and --limit-test: Explanation.load checks them first
        if self.faithfulness_images != 0:
            self.faithfulness_images, self.sanity_images = comparison_sizes(
                self.faithfulness_images, self.sanity_images, devices.choose(self.device))


def parse_args(argv) -> Options:
    opts = Options(**cli.parse(Options, argv, __doc__))
    opts.check()
    return opts


def save(fig, path: Path):
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


def pictures(ex: Explanation, opts: Options, out: Path) -> tuple:
    """Every picture into `out`; (the numbers they measured, the faithfulness Comparison or None)."""
    for name, fig in (("curves", ex.curves()), ("misclassified", ex.misclassified(opts.n)),
                      ("gradcam", ex.gradcam(opts.n)), ("layers", ex.depth()), ("confusion", ex.confusion())):
        save(fig, out / f"{name}.png")
    table = (ex.faithfulness(opts.method, opts.faithfulness_images, opts.sanity_images)
             if opts.faithfulness_images else None)
    save(ex.methods(opts.method, table=table), out / "methods.png")
    numbers = {"method_images": len(ex.mistakes(METHOD_IMAGES)), "faithfulness": table and table.as_dict()}
    if opts.adversarial and not len(ex.test.right(1)):
        print("note: no correctly classified test image to attack", file=sys.stderr)
    elif opts.adversarial:
        fig, numbers["adversarial"] = ex.adversarial(opts.n, opts.attack, opts.eps)
        numbers["attack"] = {"method": opts.attack, "eps": opts.eps}
        save(fig, out / "adversarial.png")
    return numbers, table


def summarise(ex: Explanation, opts: Options) -> dict:
    """What summary.json holds besides the pictures' numbers."""
    shown = ex.test.wrong(opts.n)
    return {"checkpoint": ex.checkpoint, "data_dir": ex.data_dir, "layer": ex.layer, "weights": ex.weights,
            "tta": ex.tta, "test_images": len(ex.test), "accuracy": ex.test.accuracy,
            "accuracy_line": ex.accuracy_line(), "chance": ex.chance(),
            "misclassified": [{"index": int(i), "true": ex.study.classes[y], "predicted": ex.study.classes[z],
                               "confidence": float(c)}
                              for i, y, z, c in zip(shown.index, shown.labels, shown.preds, shown.conf)],
            "per_class": ex.per_class()}


def main(argv=None):
    t0 = time.perf_counter()
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    ex = Explanation.load(opts.checkpoint, opts.device, opts.data_dir, opts.limit_test, opts.layer)
    print(ex.accuracy_line(), flush=True)
    if ex.chance()["note"]:
        print(f"note: {ex.chance()['note']}", flush=True)
    out = Path(opts.out) if opts.out else Path(opts.checkpoint).parent / "viz"
    out.mkdir(parents=True, exist_ok=True)
    numbers, comparison = pictures(ex, opts, out)
    summary = {**summarise(ex, opts), **numbers, "seconds": time.perf_counter() - t0}
    tables = report.tables(summary, comparison)
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    write_text(out / "report.md", report.report(summary, ex.state, tables, comparison))
    for title, text in tables.items():
        print(f"\n{title}:\n{text}")
    notes = comparison.notes() if comparison else []
    if notes:
        print("\n" + "\n".join(f"note: {n}" for n in notes))
    print(f"\nwrote {out}/report.md and its pictures in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    cli.run(main)
