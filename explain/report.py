"""The report of one explained checkpoint, as viz.py writes it and Explanation.report returns it: every
picture, summary.json, and report.md with its tables (printed too): faithfulness and sanity, per-class
accuracy, the attack."""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.files import atomic_write, write_text
from common.tables import markdown

from .comparison import CAVEAT, MEASURES
from .options import METHOD_IMAGES

PER_CLASS = "per class"


def per_class(matrix: np.ndarray, classes: list) -> list:
    rows = []
    for i, name in enumerate(classes):
        others = matrix[i].copy()
        others[i] = 0
        rows.append({"class": name, "images": int(matrix[i].sum()), "correct": int(matrix[i, i]),
                     "accuracy": float(matrix[i, i] / max(matrix[i].sum(), 1)),
                     "confused_with": classes[int(others.argmax())] if others.any() else ""})
    return rows


def attack_title(summary: dict) -> str:
    a, rows = summary["attack"], summary["adversarial"]
    return (f"{a['method'].upper()}, ε = {a['eps']:g}/255: {sum(r['fooled'] for r in rows)} of {len(rows)} "
            "fooled")


def tables(summary: dict, comparison=None) -> dict:
    """The report's tables by title: the faithfulness comparison's (if it ran), per-class accuracy, and
    the attack if there was one."""
    classes = [[r["class"], r["images"], f"{r['accuracy']:.1%}", r["confused_with"]]
               for r in summary["per_class"]]
    t = {**(comparison.tables() if comparison else {}),
         PER_CLASS: markdown(["class", "images", "accuracy", "most often taken for"], classes)}
    if summary.get("adversarial"):
        rows = [[r["true"], f"{r['before']:.1%}", r["predicted"], f"{r['confidence']:.1%}",
                 f"{r['true_after']:.1%}"] for r in summary["adversarial"]]
        t[f"adversarial: {attack_title(summary)}"] = markdown(
            ["true", "conf", "after attack", "conf", "true class conf"], rows)
    return t


def headline(summary: dict, state: dict) -> str:
    """What was explained, and its accuracy now (naming weights and TTA) next to what training measured."""
    h, cfg = state["history"], state["config"]
    trained = "no finished epoch yet"
    if h:
        subset = f" on {cfg['limit_test']} test images" if cfg.get("limit_test") else ""
        ema = f", EMA weights {h[-1]['ema_test_acc']:.2%}" if "ema_test_acc" in h[-1] else ""
        tta = ", flip TTA" if cfg.get("tta") else ", no TTA"
        trained = f"final epoch: raw weights {h[-1]['test_acc']:.2%}{ema}{tta}{subset}"
    weights = "the moving average of the weights" if summary["weights"] == "ema" else "the weights"
    tta = " with flip test-time augmentation" if summary["tta"] else ""
    return (f"{cfg['model']} on {cfg.get('data', 'cifar10')} ({summary['data_dir']}), epoch {state['epoch']} "
            f"of {cfg.get('epochs', '?')}, {cfg.get('precision', '?')}; explaining {weights}{tta}. Now: "
            f"**{summary['accuracy_line']}**; in training: {trained}.")


def faithfulness_section(comparison, t: dict) -> list:
    """The comparison's tables, what each number measures, and where they disagree."""
    parts = ["## Which map to believe: faithfulness and the sanity check"]
    for title in comparison.tables():
        parts += [f"**{title}**", t[title]]
    parts.append("What each number measures:\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in MEASURES.items()))
    parts.append(CAVEAT)
    if comparison.notes():
        parts.append("Here:\n\n" + "\n".join(f"- {n}" for n in comparison.notes()))
    return parts


def report(summary: dict, state: dict, t: dict, comparison=None) -> str:
    chance = [f"**Note: {summary['chance']['note']}.**"] if summary["chance"]["note"] else []
    parts = [f"# {summary['checkpoint']}", headline(summary, state), *chance,
             "## Config", "```json\n" + json.dumps(state["config"], indent=2) + "\n```",
             "## Training curves", "![curves](curves.png)",
             "## Misclassified test images", "![misclassified](misclassified.png)",
             f"## Grad-CAM at {summary['layer']}", "![gradcam](gradcam.png)", "![layers](layers.png)",
             "## CAM methods", "![methods](methods.png)",
             *(faithfulness_section(comparison, t) if comparison else []),
             "## Confusion and per-class accuracy", "![confusion](confusion.png)", t[PER_CLASS]]
    if summary.get("adversarial"):
        title = attack_title(summary)
        parts += [f"## Adversarial: {title}", "![adversarial](adversarial.png)", t[f"adversarial: {title}"]]
    parts.append(f"Made by viz.py in {summary['seconds']:.1f} s.")
    return "\n\n".join(parts) + "\n"


@dataclass(frozen=True)
class Written:
    """What a report wrote: its folder, summary.json's content, and the tables and notes it printed."""
    out: Path
    summary: dict
    tables: dict
    notes: list

    def __str__(self):
        lines = [f"\n{title}:\n{text}" for title, text in self.tables.items()]
        lines += ["\n" + "\n".join(f"note: {n}" for n in self.notes)] if self.notes else []
        return "\n".join(lines + [f"\nwrote {self.out}/report.md and its pictures in {self.summary['seconds']:.1f} s"])


def write(ex, opts, out: Path, started: float) -> Written:
    """Every picture of ex (an Explanation) as opts (explain.Options) asks, then summary.json and
    report.md, into out."""
    out.mkdir(parents=True, exist_ok=True)
    numbers, comparison = pictures(ex, opts, out)
    summary = {**summarise(ex, opts), **numbers, "seconds": time.perf_counter() - started}
    t = tables(summary, comparison)
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    write_text(out / "report.md", report(summary, ex.state, t, comparison))
    return Written(out, summary, t, comparison.notes() if comparison else [])


def save(fig, path: Path):
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


def pictures(ex, opts, out: Path) -> tuple:
    """Every picture into `out`; (the numbers they measured, the faithfulness Comparison or None)."""
    for name, fig in (("curves", ex.curves()), ("misclassified", ex.misclassified(opts.n)),
                      ("gradcam", ex.gradcam(opts.n)), ("layers", ex.depth()), ("confusion", ex.confusion())):
        save(fig, out / f"{name}.png")
    table = (ex.faithfulness(opts.methods, opts.faithfulness_images, opts.sanity_images)
             if opts.faithfulness_images != 0 else None)
    save(ex.methods(opts.methods, table=table), out / "methods.png")
    numbers = {"method_images": len(ex.mistakes(METHOD_IMAGES)), "faithfulness": table and table.as_dict()}
    if opts.adversarial and not len(ex.test.right(1)):
        print("note: no correctly classified test image to attack", file=sys.stderr)
    elif opts.adversarial:
        attack, eps = opts.attack_budget
        fig, numbers["adversarial"] = ex.adversarial(opts.n, attack, eps)
        numbers["attack"] = {"method": attack, "eps": eps}
        save(fig, out / "adversarial.png")
    return numbers, table


def summarise(ex, opts) -> dict:
    """What summary.json holds besides the pictures' numbers."""
    shown = ex.test.wrong(opts.n)
    return {"checkpoint": ex.checkpoint, "data_dir": ex.data_dir, "layer": ex.layer, "weights": ex.weights,
            "tta": ex.tta, "test_images": len(ex.test), "accuracy": ex.test.accuracy,
            "accuracy_line": ex.accuracy_line(), "chance": ex.chance(),
            "misclassified": [{"index": int(i), "true": ex.study.classes[y], "predicted": ex.study.classes[z],
                               "confidence": float(c)}
                              for i, y, z, c in zip(shown.index, shown.labels, shown.preds, shown.conf)],
            "per_class": ex.per_class()}
