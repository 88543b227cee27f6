"""report.md and the tables in it (printed too): faithfulness and sanity, per-class accuracy, the attack."""
import json

import numpy as np

from common.tables import markdown

from .comparison import CAVEAT, MEASURES

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
