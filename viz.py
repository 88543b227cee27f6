"""Explain a trained checkpoint: curves, mistakes, class activation maps, faithfulness, confusion, attacks.

  python viz.py --checkpoint runs/resnet18/last.pt              # everything, into runs/resnet18/viz/
  python viz.py --checkpoint RUN/best.pt --layer layer2 --method gradcam eigencam
  python viz.py --checkpoint RUN/last.pt --adversarial --attack pgd --eps 8

It never trains and writes nothing outside --out. The test set goes through the DALI eval pipeline with
the checkpoint's normalisation, as in training; the model is rebuilt uncompiled, in float32.
"""
import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure  # no pyplot: no global figures, no GUI backend
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn

import cli
import explain
import nets
import pipeline
from cli import UsageError
from nets import checkpoint

DEFAULT_METHODS = ("gradcam", "gradcam++", "eigencam", "scorecam")
METHOD_IMAGES = 4   # methods.png and the faithfulness table: ScoreCAM costs a pass per channel per image
EVAL_BATCH = 256


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, as for every other user mistake
        cli.fail(f"{message} (see --help)")


def parse_args(argv) -> argparse.Namespace:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .pt file written by train.py")
    p.add_argument("--out", type=Path, help="output folder (default: viz/ next to the checkpoint)")
    p.add_argument("--data-dir", help="dataset folder (default: the one the run trained on)")
    p.add_argument("--n", type=int, default=10, help="images per gallery (default 10)")
    p.add_argument("--layer", default="layer3", help="where the CAMs look (default layer3, 8x8 on CIFAR)")
    p.add_argument("--method", nargs="+", default=list(DEFAULT_METHODS),
                   help=f"CAM methods to compare: {', '.join(explain.METHODS)} (default: {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--adversarial", action="store_true", help="attack correctly classified images")
    p.add_argument("--attack", choices=("fgsm", "pgd"), help="with --adversarial (default fgsm)")
    p.add_argument("--eps", type=float, help="attack budget in pixel units /255 (default 8)")
    p.add_argument("--limit-test", type=int, default=0, help="use the first N test images (smoke runs)")
    args = p.parse_args(argv)
    check(args)
    return args


def check(args):
    args.method = list(dict.fromkeys(m for text in args.method for m in text.split(",") if m))
    unknown = [m for m in args.method if m not in explain.METHODS]
    if unknown or not args.method:
        raise UsageError(f"--method {' '.join(unknown)}: choose from {', '.join(explain.METHODS)}")
    if (args.attack or args.eps is not None) and not args.adversarial:
        raise UsageError("--attack and --eps set up --adversarial: add it, or drop them")
    args.attack, args.eps = args.attack or "fgsm", 8.0 if args.eps is None else args.eps
    if not 0 < args.eps <= 255:
        raise UsageError(f"--eps is in pixel units /255 and must be in (0, 255] (got {args.eps})")
    if args.n < 1 or args.limit_test < 0:
        raise UsageError("--n must be >= 1 and --limit-test >= 0")


# ---------------------------------------------------------------------------------------- loading
def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA GPU is visible: use --device cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def load_model(state: dict, path, device) -> nn.Module:
    """The checkpoint's weights in a fresh uncompiled float32 model, in eval mode."""
    try:
        model = nets.create(state["config"]["model"], num_classes=len(state["classes"]))
        model.load_state_dict(state["model"])
    except (KeyError, ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0][:120]
        raise checkpoint.CheckpointError(f"{path}: its weights do not fit the model it names ({reason}): "
                                         "pass a file written by train.py") from None
    return model.float().eval().to(device)


def open_data(state: dict, data_dir) -> pipeline.Dataset:
    cfg = state["config"]
    data_dir = data_dir or cfg["data_dir"]
    data = pipeline.open_dataset(cfg.get("data", "cifar10"), data_dir, cfg.get("image_size", 0),
                                 download=False)
    if list(data.classes) != list(state["classes"]):
        raise pipeline.DataError(f"{data_dir} holds classes {list(data.classes)[:5]}..., the checkpoint "
                                 f"was trained on {list(state['classes'])[:5]}...: pass its data with --data-dir")
    return data


@torch.inference_mode()
def predict(model, loader) -> tuple:
    """Softmax outputs (N x classes) and labels of every test image, in test-set order."""
    probs, labels = [], []
    for x, y in loader:
        probs.append(model(x.float()).float().softmax(1).cpu())
        labels.append(y.cpu())
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def gather(loader, index) -> torch.Tensor:
    """The normalised images at test-set positions `index`, in that order (one more pass)."""
    where, found, start = {int(i): k for k, i in enumerate(index)}, [None] * len(index), 0
    for x, _ in loader:
        for i in range(start, start + len(x)):
            if i in where:
                found[where[i]] = x[i - start].float().clone()  # DALI reuses its buffers
        start += len(x)
    return torch.stack(found) if found else torch.empty(0)


# ---------------------------------------------------------------------------------------- figures
def hwc(pixels: torch.Tensor) -> np.ndarray:
    return pixels.permute(1, 2, 0).detach().cpu().numpy().astype(np.float32)


def overlay(pixels: torch.Tensor, cam: np.ndarray) -> np.ndarray:
    return show_cam_on_image(hwc(pixels), cam, use_rgb=True)


def grid(rows: list, path: Path, title: str, cam_bar=True, cell=2.0):
    """A table of images: rows of (image HWC, title) cells; optionally a colour bar for the overlays."""
    cols = max(len(r) for r in rows)
    fig = Figure(figsize=(cell * cols + (0.8 if cam_bar else 0), cell * len(rows) + 0.6),
                 layout="constrained", dpi=110)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for ax_row, cells in zip(axes, rows):
        for ax, item in zip(ax_row, cells + [None] * (cols - len(cells))):
            ax.set_axis_off()
            if item is not None:
                ax.imshow(item[0], interpolation="nearest")
                ax.set_title(item[1], fontsize=8)
    if cam_bar:
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes, shrink=0.6, aspect=30)
        bar.set_label("CAM (each map scaled to [0, 1])")
    fig.suptitle(title, fontsize=11)
    fig.savefig(path)


def wrap(cells: list, per_row: int) -> list:
    """Groups of cells (one group per image), per_row groups side by side on each row."""
    return [sum(cells[i:i + per_row], []) for i in range(0, len(cells), per_row)]


def plot_curves(history: list, path: Path):
    fig = Figure(figsize=(15, 4.2), layout="constrained", dpi=110)
    loss, acc, lr = fig.subplots(1, 3)
    epochs = [r["epoch"] for r in history]
    for split, style in (("train", "-o"), ("val", "--s"), ("test", "-s")):
        if history and f"{split}_loss" in history[0]:
            loss.plot(epochs, [r[f"{split}_loss"] for r in history], style, label=split)
            acc.plot(epochs, [100 * r[f"{split}_acc"] for r in history], style, label=split)
    if history:
        best = max(history, key=lambda r: r["test_acc"])
        acc.annotate(f"best {best['test_acc']:.2%}", (best["epoch"], 100 * best["test_acc"]),
                     textcoords="offset points", xytext=(0, -16), ha="center", fontsize=8)
    lr.plot(epochs, [r["lr"] for r in history], "-o", color="tab:purple")
    loss.set(title="loss", xlabel="epoch", yscale="log" if history and min(
        r["test_loss"] for r in history) > 0 else "linear")
    acc.set(title="accuracy (%)", xlabel="epoch", ylim=(0, 100))
    lr.set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in (loss, acc):
        ax.legend()
    for ax in (loss, acc, lr):
        ax.grid(alpha=0.3)
    fig.suptitle("training history" if history else "training history: no finished epoch yet")
    fig.savefig(path)


def plot_confusion(matrix: np.ndarray, classes: list, path: Path):
    k = len(classes)
    fig = Figure(figsize=(1.5 + 0.55 * k, 1.2 + 0.5 * k), layout="constrained", dpi=110)
    ax = fig.subplots()
    rate = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:  # counts stay readable
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, count, ha="center", va="center", fontsize=8,
                    color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (counts; colour: share of the row)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path)


# ------------------------------------------------------------------------------------ the studies
@dataclass
class Study:
    """The checkpoint under study and what the figures need of it."""
    model: nn.Module
    layer: nn.Module
    layer_name: str
    classes: list
    mean: tuple
    std: tuple
    image_size: int
    out: Path

    def pixels(self, images):
        return explain.to_pixels(images, self.mean, self.std)

    def label(self, true, pred, conf) -> str:
        return f"{self.classes[true]} → {self.classes[pred]} ({conf:.0%})"


def mistakes(s: Study, images, index, labels, preds, conf, n_total: int):
    """misclassified.png, gradcam.png (predicted vs true class) and layers.png."""
    pix = s.pixels(images)
    titles = [f"{s.label(labels[i], preds[i], conf[i])}\ntest #{i}" for i in index]
    grid(wrap([[(hwc(p), t)] for p, t in zip(pix, titles)], 5), s.out / "misclassified.png",
         f"first {len(index)} misclassified of {n_total} test images (true → predicted)", cam_bar=False)
    on_pred = explain.cams(s.model, s.layer, images, preds[index])
    on_true = explain.cams(s.model, s.layer, images, labels[index])
    cells = [[(hwc(p), t.split("\n")[0]), (overlay(p, a), f"for {s.classes[preds[i]]} (predicted)"),
              (overlay(p, b), f"for {s.classes[labels[i]]} (true)")]
             for p, t, a, b, i in zip(pix, titles, on_pred, on_true, index)]
    grid(wrap(cells, 2), s.out / "gradcam.png", f"Grad-CAM at {s.layer_name}: predicted vs true class")
    stages = [n for n in explain.stage_names(s.model) if explain.fine_enough(s.model, n, s.image_size)]
    row = [(hwc(pix[0]), titles[0].split("\n")[0])]
    for name in stages:
        h, w = explain.map_size(s.model, explain.block(s.model, name), s.image_size)
        row.append((overlay(pix[0], explain.cams(s.model, explain.block(s.model, name), images[:1],
                                                 preds[index[:1]])[0]), f"end of {name} ({h}x{w})"))
    grid([row], s.out / "layers.png", f"Grad-CAM by depth, for the predicted class "
                                      f"{s.classes[preds[index[0]]]}")
    return on_pred


def methods(s: Study, images, classes, names: list) -> dict:
    """methods.png and each method's faithfulness (ROAD) on the same images, for `classes`."""
    pix, columns, scores = s.pixels(images), [], {}
    for name in names:
        t0 = time.perf_counter()
        maps = explain.cams(s.model, s.layer, images, classes, name)
        scores[name] = {**explain.faithfulness(s.model, images, maps, classes),
                        "seconds": time.perf_counter() - t0}
        columns.append([(overlay(p, m), f"{name}\nLeRF−MoRF {scores[name]['score']:+.3f}")
                        for p, m in zip(pix, maps)])
    rows = [[(hwc(p), f"predicted {s.classes[c]}")] + [col[i] for col in columns]
            for i, (p, c) in enumerate(zip(pix, classes))]
    grid(rows, s.out / "methods.png", f"CAM methods at {s.layer_name}, for the predicted class")
    return scores


def adversarial(s: Study, images, labels, attack: str, eps: float) -> list:
    """adversarial.png: original vs attacked, each with its prediction and Grad-CAM."""
    pix = s.pixels(images)
    adv = explain.attack(s.model, pix, labels, eps / 255, s.mean, s.std, attack)
    with torch.no_grad():
        before, after = (s.model(explain.normalise(x, s.mean, s.std)).softmax(1) for x in (pix, adv))
    fooled_as = after.argmax(1)
    cam_true = explain.cams(s.model, s.layer, images, labels)
    cam_adv = explain.cams(s.model, s.layer, explain.normalise(adv, s.mean, s.std), fooled_as)
    gain = 0.5 / (eps / 255)  # the perturbation, scaled to fill mid-grey +- 0.5
    cells, rows = [], []
    for k, y in enumerate(labels.tolist()):
        z = int(fooled_as[k])
        rows.append({"true": s.classes[y], "before": float(before[k, y]), "predicted": s.classes[z],
                     "confidence": float(after[k, z]), "true_after": float(after[k, y]), "fooled": z != y})
        cells.append([(hwc(pix[k]), f"{s.classes[y]} ({before[k, y]:.0%})"),
                      (overlay(pix[k], cam_true[k]), f"CAM {s.classes[y]}"),
                      (hwc(adv[k]), f"{'fooled' if z != y else 'held'}: {s.classes[z]} ({after[k, z]:.0%})"),
                      (overlay(adv[k], cam_adv[k]), f"CAM {s.classes[z]}"),
                      (hwc((0.5 + gain * (adv[k] - pix[k])).clamp(0, 1)), f"perturbation x{gain:.0f}")])
    grid(wrap(cells, 2), s.out / "adversarial.png",
         f"{attack.upper()} at ε = {eps:g}/255: original vs attacked, Grad-CAM at {s.layer_name}")
    return rows


# ----------------------------------------------------------------------------------------- tables
def table(headers: list, rows: list) -> str:
    """An aligned markdown table: printed as it is and embedded in the report."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, cells[1:])])


def per_class(matrix: np.ndarray, classes: list) -> list:
    rows = []
    for i, name in enumerate(classes):
        others = matrix[i].copy()
        others[i] = 0
        rows.append({"class": name, "images": int(matrix[i].sum()), "correct": int(matrix[i, i]),
                     "accuracy": float(matrix[i, i] / max(matrix[i].sum(), 1)),
                     "confused_with": classes[int(others.argmax())] if others.any() else ""})
    return rows


def tables(summary: dict) -> dict:
    t = {"faithfulness": table(
        ["method", "MoRF Δconf", "LeRF Δconf", "LeRF−MoRF", "seconds"],
        [[m, f"{f['morf']:+.4f}", f"{f['lerf']:+.4f}", f"{f['score']:+.4f}", f"{f['seconds']:.1f}"]
         for m, f in summary["faithfulness"].items()]),
        "per_class": table(["class", "images", "accuracy", "most often taken for"],
                           [[r["class"], r["images"], f"{r['accuracy']:.1%}", r["confused_with"]]
                            for r in summary["per_class"]])}
    if summary.get("adversarial"):
        t["adversarial"] = table(["true", "conf", "attacked → predicted", "conf", "true conf after"],
                                 [[r["true"], f"{r['before']:.1%}", r["predicted"], f"{r['confidence']:.1%}",
                                   f"{r['true_after']:.1%}"] for r in summary["adversarial"]])
    return t


def report(summary: dict, state: dict, t: dict) -> str:
    h, cfg, acc = state["history"], state["config"], summary["accuracy"]
    trained = (f"last epoch {h[-1]['test_acc']:.2%}, best {state.get('best_acc', 0):.2%}" if h
               else "no finished epoch")
    parts = [f"# {summary['checkpoint']}",
             f"{cfg['model']} on {cfg.get('data', 'cifar10')} ({summary['data_dir']}), epoch {state['epoch']} "
             f"of {cfg.get('epochs', '?')}. Test accuracy now: **{acc:.2%}** on {summary['test_images']} "
             f"images; during training: {trained}.",
             "## Config", "```json\n" + json.dumps(cfg, indent=2) + "\n```",
             "## Training curves", "![curves](curves.png)",
             "## Misclassified test images", "![misclassified](misclassified.png)",
             f"## Grad-CAM at {summary['layer']}", "![gradcam](gradcam.png)", "![layers](layers.png)",
             "## CAM methods and their faithfulness", "![methods](methods.png)",
             f"ROAD on the {summary['method_images']} images above, for the predicted class: mean change of "
             "its softmax confidence when the most (MoRF) or least (LeRF) relevant pixels are imputed "
             f"({', '.join(f'{100 - p}' for p in explain.ROAD_PERCENTILES)} % of them). Faithful: MoRF "
             "drops far, LeRF little, LeRF−MoRF > 0.", t["faithfulness"],
             "## Confusion and per-class accuracy", "![confusion](confusion.png)", t["per_class"]]
    if "adversarial" in t:
        a = summary["attack"]
        parts += [f"## Adversarial: {a['method'].upper()}, ε = {a['eps']:g}/255",
                  "![adversarial](adversarial.png)", t["adversarial"]]
    parts.append(f"Made by viz.py in {summary['seconds']:.1f} s.")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- main
def main(argv=None):
    t0 = time.perf_counter()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    state = checkpoint.load(args.checkpoint)
    device = pick_device(args.device)
    model = load_model(state, args.checkpoint, device)
    data = open_data(state, args.data_dir)
    layer = explain.find_layer(model, args.layer, data.image_size)  # a wrong layer fails before the long work
    out = args.out or Path(args.checkpoint).parent / "viz"
    out.mkdir(parents=True, exist_ok=True)
    s = Study(model, layer, args.layer, list(state["classes"]), tuple(state["mean"]), tuple(state["std"]),
              data.image_size, out)

    items, labels = (a[:args.limit_test or None] for a in data.test)
    loader = data.eval_loader(items, labels, mean=s.mean, std=s.std, batch_size=EVAL_BATCH,
                              device_id=device.index, dtype=torch.float32,
                              channels_last=state["config"].get("channels_last", True))
    probs, labels = predict(model, loader)
    preds, conf = probs.argmax(1), probs.max(1)
    wrong, right = np.flatnonzero(preds != labels)[:args.n], np.flatnonzero(preds == labels)[:args.n]
    shown = wrong if len(wrong) else np.arange(min(args.n, len(labels)))  # a perfect model: explain hits
    images = gather(loader, np.concatenate([shown, right]) if args.adversarial else shown).to(device)
    summary = {"checkpoint": str(args.checkpoint), "data_dir": args.data_dir or state["config"]["data_dir"],
               "layer": args.layer, "test_images": len(labels), "accuracy": float((preds == labels).mean()),
               "misclassified": [{"index": int(i), "true": s.classes[labels[i]], "predicted": s.classes[preds[i]],
                                  "confidence": float(conf[i])} for i in wrong],
               "method_images": min(METHOD_IMAGES, len(shown))}

    plot_curves(state["history"], out / "curves.png")
    mistakes(s, images[:len(shown)], shown, labels, preds, conf, len(labels))
    summary["faithfulness"] = methods(s, images[:summary["method_images"]],
                                      preds[shown[:METHOD_IMAGES]], args.method)
    matrix = np.zeros((len(s.classes),) * 2, dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    plot_confusion(matrix, s.classes, out / "confusion.png")
    summary["per_class"] = per_class(matrix, s.classes)
    if args.adversarial:
        summary["attack"] = {"method": args.attack, "eps": args.eps}
        summary["adversarial"] = adversarial(s, images[len(shown):], torch.as_tensor(labels[right], device=device),
                                             args.attack, args.eps)
    summary["seconds"] = time.perf_counter() - t0
    t = tables(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(report(summary, state, t))
    print(f"test accuracy {summary['accuracy']:.2%} on {len(labels)} images; "
          f"{int((preds != labels).sum())} misclassified")
    for name, text in t.items():
        print(f"\n{name.replace('_', ' ')}:\n{text}")
    print(f"\nwrote {out}/report.md and its pictures in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    cli.run(main)
