"""report.md and the tables in it (printed too): faithfulness, per-class accuracy, the attack."""
import json

import numpy as np

from common.tables import markdown

from .faithfulness import REMOVED, signed


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


def tables(summary: dict) -> dict:
    """The report's tables by title: faithfulness, per-class accuracy, and the attack if there was one."""
    faith = [[m, *(signed(f[k]) for k in ("morf", "lerf", "score")), f"{f['seconds']:.1f}"]
             for m, f in summary["faithfulness"].items()]
    classes = [[r["class"], r["images"], f"{r['accuracy']:.1%}", r["confused_with"]]
               for r in summary["per_class"]]
    t = {f"faithfulness at {summary['layer']} (ROAD, {summary['method_images']} images, predicted class; "
         "LeRF−MoRF > 0: faithful)":
         markdown(["method", "MoRF Δconf", "LeRF Δconf", "LeRF−MoRF", "seconds"], faith),
         "per class": markdown(["class", "images", "accuracy", "most often taken for"], classes)}
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


def report(summary: dict, state: dict, t: dict) -> str:
    removed = ", ".join(f"{100 * f:.0f}" for f in REMOVED)
    faith, per_class, *attack = t.values()
    chance = [f"**Note: {summary['chance']['note']}.**"] if summary["chance"]["note"] else []
    parts = [f"# {summary['checkpoint']}", headline(summary, state), *chance,
             "## Config", "```json\n" + json.dumps(state["config"], indent=2) + "\n```",
             "## Training curves", "![curves](curves.png)",
             "## Misclassified test images", "![misclassified](misclassified.png)",
             f"## Grad-CAM at {summary['layer']}", "![gradcam](gradcam.png)", "![layers](layers.png)",
             "## CAM methods and their faithfulness", "![methods](methods.png)",
             f"ROAD on the {summary['method_images']} images above, for the predicted class: mean change of "
             "its softmax confidence when the most (MoRF) or least (LeRF) relevant pixels are imputed "
             f"({removed} % of them). Faithful: MoRF drops far, LeRF little, LeRF−MoRF > 0; at or below 0 the "
             "map marks pixels that matter no more to the prediction than the rest.",
             faith, "## Confusion and per-class accuracy", "![confusion](confusion.png)", per_class]
    if attack:
        parts += [f"## Adversarial: {attack_title(summary)}", "![adversarial](adversarial.png)", *attack]
    parts.append(f"Made by viz.py in {summary['seconds']:.1f} s.")
    return "\n\n".join(parts) + "\n"
