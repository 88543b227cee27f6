"""Explain a trained checkpoint: curves, mistakes, class activation maps, faithfulness, confusion, attacks.

  python viz.py --checkpoint runs/resnet18/last.pt              # everything, into runs/resnet18/viz/
  python viz.py --checkpoint RUN/best.pt --layer layer2 --method gradcam eigencam
  python viz.py --checkpoint RUN/last.pt --adversarial --attack pgd --eps 8

It never trains and writes nothing outside --out. The test set goes through the DALI eval pipeline with
the checkpoint's normalisation, as in training; the model is rebuilt uncompiled, in float32.
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common import cli, device as devices
from common.cli import UsageError, option
from common.files import write_text
from explain import evaluation, figures, report, study
from explain.cams import METHODS
from explain.layers import find_layer
from nets import checkpoint

DEFAULT_METHODS = ("gradcam", "gradcam++", "eigencam", "scorecam")
METHOD_IMAGES = 4   # methods.png and the faithfulness table: ScoreCAM costs a pass per channel per image


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
    attack: str = option(None, "with --adversarial: fgsm or pgd (default fgsm)", choices=("fgsm", "pgd"))
    eps: float = option(None, "with --adversarial: attack budget in pixel units /255 (default 8)")
    limit_test: int = option(0, "use the first N test images (smoke runs)")

    def check(self):
        self.method = list(dict.fromkeys(m for text in self.method for m in text.split(",") if m))
        unknown = [m for m in self.method if m not in METHODS]
        if unknown or not self.method:
            raise UsageError(f"--method {' '.join(unknown)}: choose from {', '.join(METHODS)}")
        if (self.attack or self.eps is not None) and not self.adversarial:
            raise UsageError("--attack and --eps set up --adversarial: add it, or drop them")
        self.attack, self.eps = self.attack or "fgsm", 8.0 if self.eps is None else self.eps
        if not 0 < self.eps <= 255:
            raise UsageError(f"--eps is in pixel units /255 and must be in (0, 255] (got {self.eps})")
        if self.n < 1 or self.limit_test < 0:
            raise UsageError("--n must be >= 1 and --limit-test >= 0")


def parse_args(argv) -> Options:
    opts = Options(**cli.parse(Options, argv, __doc__))
    opts.check()
    return opts


def explain_run(s: study.Study, opts: Options, state: dict, data, device) -> dict:
    """Every picture; the numbers for the report."""
    loader, labels = evaluation.test_loader(data, state, opts.limit_test, device)
    probs, labels = evaluation.predict(s.model, loader, state["config"].get("tta", False))
    preds, conf = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(preds != labels)[:opts.n]
    right = np.flatnonzero(preds == labels)[:opts.n if opts.adversarial else 0]
    shown = wrong if len(wrong) else np.arange(min(opts.n, len(labels)))  # no mistakes: explain hits
    images = evaluation.gather(loader, np.concatenate([shown, right])).to(device)
    pics, few = images[:len(shown)], shown[:METHOD_IMAGES]

    figures.plot_curves(state["history"], state["lr_steps"], s.out / "curves.png")
    study.gallery(s, pics, shown, labels, preds, conf, f"first {len(wrong)} misclassified of {len(labels)} "
                  "test images (true → predicted)" if len(wrong) else f"no mistakes in {len(labels)} test "
                  f"images: the first {len(shown)} instead")
    study.class_pairs(s, pics, labels[shown], preds[shown], conf[shown])
    study.by_depth(s, pics[0], labels[shown[0]], preds[shown[0]], conf[shown[0]])
    matrix = evaluation.confusion_matrix(labels, preds, len(s.classes))
    figures.plot_confusion(matrix, s.classes, s.out / "confusion.png")
    summary = {"layer": s.layer_name, "weights": evaluation.weights_of(state),
               "tta": state["config"].get("tta", False), "test_images": len(labels),
               "accuracy": float((preds == labels).mean()),
               "misclassified": [{"index": int(i), "true": s.classes[labels[i]],
                                  "predicted": s.classes[preds[i]], "confidence": float(conf[i])}
                                 for i in wrong],
               "per_class": report.per_class(matrix, s.classes), "method_images": len(few),
               "faithfulness": study.compare_methods(s, pics[:len(few)], preds[few], opts.method)}
    if len(right):
        hits = torch.as_tensor(labels[right], device=device)
        summary["attack"] = {"method": opts.attack, "eps": opts.eps}
        summary["adversarial"] = study.attacked(s, images[len(shown):], hits, opts.attack, opts.eps)
    elif opts.adversarial:
        print("note: no correctly classified test image to attack", file=sys.stderr)
    return summary


def main(argv=None):
    t0 = time.perf_counter()
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    state = checkpoint.load(opts.checkpoint)
    device = devices.choose(opts.device)
    model = evaluation.load_model(state, opts.checkpoint, device)
    data_dir = opts.data_dir or state["config"].get("data_dir", "data")
    data = evaluation.open_data(state, data_dir)
    layer = find_layer(model, opts.layer, data.image_size)  # a bad layer fails before the long work
    out = Path(opts.out) if opts.out else Path(opts.checkpoint).parent / "viz"
    out.mkdir(parents=True, exist_ok=True)
    s = study.Study(model, layer, opts.layer, list(state["classes"]), tuple(state["mean"]),
                    tuple(state["std"]), data.image_size, out)
    summary = {"checkpoint": str(opts.checkpoint), "data_dir": str(data_dir),
               **explain_run(s, opts, state, data, device), "seconds": time.perf_counter() - t0}
    tables = report.tables(summary)
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    write_text(out / "report.md", report.report(summary, state, tables))
    print(f"test accuracy {summary['accuracy']:.2%} on {summary['test_images']} images")
    for name, text in tables.items():
        print(f"\n{name.replace('_', ' ')}:\n{text}")
    print(f"\nwrote {out}/report.md and its pictures in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    cli.run(main)
