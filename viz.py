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
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no global figures, no GUI backend
from matplotlib.ticker import MaxNLocator
from torch import nn

from common import cli
import explain
import nets
import pipeline
from common.cli import UsageError
from nets import checkpoint

DEFAULT_METHODS = ("gradcam", "gradcam++", "eigencam", "scorecam")
METHOD_IMAGES = 4   # methods.png and the faithfulness table: ScoreCAM costs a pass per channel per image
EVAL_BATCH = 256


def parse_args(argv) -> argparse.Namespace:
    p = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .pt file written by train.py")
    p.add_argument("--out", type=Path, help="output folder (default: viz/ next to the checkpoint)")
    p.add_argument("--data-dir", help="dataset folder (default: the one the run trained on)")
    p.add_argument("--n", type=int, default=10,
                   help=f"images per gallery (default 10; methods.png: the first {METHOD_IMAGES})")
    p.add_argument("--layer", default="layer3", help="where the CAMs look (default layer3, 8x8 on CIFAR)")
    p.add_argument("--method", nargs="+", default=list(DEFAULT_METHODS),
                   help=f"CAM methods to compare, of {', '.join(explain.METHODS)} (default: "
                        f"{' '.join(DEFAULT_METHODS)})")
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


def open_data(state: dict, data_dir: str) -> pipeline.Dataset:
    """The run's dataset (never downloaded: viz explains what exists), checked against its classes."""
    cfg = state["config"]
    data = pipeline.open_dataset(cfg.get("data", "cifar10"), data_dir, cfg.get("image_size", 0),
                                 download=False)
    if list(data.classes) != list(state["classes"]):
        raise pipeline.DataError(f"{data_dir} holds classes {list(data.classes)[:4]}..., the checkpoint "
                                 f"{list(state['classes'])[:4]}...: pass the run's data with --data-dir")
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
    wanted, found, start = set(map(int, index)), {}, 0
    for x, _ in loader:
        for i in wanted.intersection(range(start, start + len(x))):
            found[i] = x[i - start].float().clone()  # DALI reuses its buffers
        start += len(x)
    return torch.stack([found[int(i)] for i in index])


# ---------------------------------------------------------------------------------------- figures
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
    losses = [r[k] for r in history for k in ("train_loss", "test_loss")]
    wide = losses and min(losses) > 0 and max(losses) / min(losses) > 20  # a diverged epoch
    loss.set(title="loss", xlabel="epoch", yscale="log" if wide else "linear")
    acc.set(title="accuracy (%)", xlabel="epoch", ylim=(0, 100))
    lr.set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in (loss, acc):
        ax.legend()
    for ax in (loss, acc, lr):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
                    color="white" if rate[i, j] > 0.5 else "black" if count else "lightgrey")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (counts; colour: share of the row)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path)


def gallery(s: explain.Study, images, index, labels, preds, conf, title: str):
    """misclassified.png: the images in real colours, each titled true → predicted (confidence)."""
    cells = [[(explain.hwc(p), f"{s.label(labels[i], preds[i], conf[i])}\ntest #{i}")]
             for p, i in zip(s.pixels(images), index)]
    explain.grid(explain.wrap(cells, 5), s.out / "misclassified.png", title, cam_bar=False)


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
    """The report's tables by name: faithfulness, per-class accuracy, and the attack if there was one."""
    faith = [[m, *(f"{f[k]:+.4f}" for k in ("morf", "lerf", "score")), f"{f['seconds']:.1f}"]
             for m, f in summary["faithfulness"].items()]
    classes = [[r["class"], r["images"], f"{r['accuracy']:.1%}", r["confused_with"]]
               for r in summary["per_class"]]
    t = {"faithfulness": table(["method", "MoRF Δconf", "LeRF Δconf", "LeRF−MoRF", "seconds"], faith),
         "per_class": table(["class", "images", "accuracy", "most often taken for"], classes)}
    if summary.get("adversarial"):
        rows = [[r["true"], f"{r['before']:.1%}", r["predicted"], f"{r['confidence']:.1%}",
                 f"{r['true_after']:.1%}"] for r in summary["adversarial"]]
        t["adversarial"] = table(["true", "conf", "after attack", "conf", "true class conf"], rows)
    return t


def headline(summary: dict, state: dict) -> str:
    """What was explained, and its accuracy now next to what training measured."""
    h, cfg = state["history"], state["config"]
    trained = "no finished epoch yet"
    if h:
        subset = f" (on the first {cfg['limit_test']} test images)" if cfg.get("limit_test") else ""
        trained = f"final {h[-1]['test_acc']:.2%}, best {state.get('best_acc', 0):.2%}{subset}"
    return (f"{cfg['model']} on {cfg.get('data', 'cifar10')} ({summary['data_dir']}), epoch {state['epoch']} "
            f"of {cfg.get('epochs', '?')}, {cfg.get('precision', '?')}. Test accuracy now: "
            f"**{summary['accuracy']:.2%}** on {summary['test_images']} images; in training: {trained}.")


def report(summary: dict, state: dict, t: dict) -> str:
    removed = ", ".join(f"{100 - p}" for p in explain.ROAD_PERCENTILES)
    parts = [f"# {summary['checkpoint']}", headline(summary, state),
             "## Config", "```json\n" + json.dumps(state["config"], indent=2) + "\n```",
             "## Training curves", "![curves](curves.png)",
             "## Misclassified test images", "![misclassified](misclassified.png)",
             f"## Grad-CAM at {summary['layer']}", "![gradcam](gradcam.png)", "![layers](layers.png)",
             "## CAM methods and their faithfulness", "![methods](methods.png)",
             f"ROAD on the {summary['method_images']} images above, for the predicted class: mean change of "
             "its softmax confidence when the most (MoRF) or least (LeRF) relevant pixels are imputed "
             f"({removed} % of them). Faithful: MoRF drops far, LeRF little, LeRF−MoRF > 0.",
             t["faithfulness"],
             "## Confusion and per-class accuracy", "![confusion](confusion.png)", t["per_class"]]
    if "adversarial" in t:
        a = summary["attack"]
        parts += [f"## Adversarial: {a['method'].upper()}, ε = {a['eps']:g}/255",
                  "![adversarial](adversarial.png)", t["adversarial"]]
    parts.append(f"Made by viz.py in {summary['seconds']:.1f} s.")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- main
def test_pass(s: explain.Study, data: pipeline.Dataset, state: dict, limit: int, device) -> tuple:
    """(loader, labels, predictions, confidences) of the test set, or its first `limit` images."""
    items, labels = (a[:limit or None] for a in data.test)
    loader = data.eval_loader(items, labels, mean=s.mean, std=s.std, batch_size=EVAL_BATCH,
                              device_id=device.index, dtype=torch.float32,
                              channels_last=state["config"].get("channels_last", True))
    probs, labels = predict(s.model, loader)
    return loader, labels, probs.argmax(1), probs.max(1)


def confusion(s: explain.Study, labels, preds) -> list:
    """confusion.png; per-class accuracy rows."""
    matrix = np.zeros((len(s.classes),) * 2, dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    plot_confusion(matrix, s.classes, s.out / "confusion.png")
    return per_class(matrix, s.classes)


def study(s: explain.Study, args, state: dict, data: pipeline.Dataset, device) -> dict:
    """Every picture; the numbers for the report."""
    loader, labels, preds, conf = test_pass(s, data, state, args.limit_test, device)
    wrong = np.flatnonzero(preds != labels)[:args.n]
    right = np.flatnonzero(preds == labels)[:args.n if args.adversarial else 0]
    shown = wrong if len(wrong) else np.arange(min(args.n, len(labels)))  # no mistakes: explain hits
    images = gather(loader, np.concatenate([shown, right])).to(device)
    pics, few = images[:len(shown)], shown[:METHOD_IMAGES]

    plot_curves(state["history"], s.out / "curves.png")
    gallery(s, pics, shown, labels, preds, conf, f"first {len(wrong)} misclassified of {len(labels)} test "
            "images (true → predicted)" if len(wrong) else f"no mistakes in {len(labels)} test images: the first "
            f"{len(shown)} instead")
    explain.class_pairs(s, pics, labels[shown], preds[shown], conf[shown])
    explain.by_depth(s, pics[0], labels[shown[0]], preds[shown[0]], conf[shown[0]])
    summary = {"layer": s.layer_name, "test_images": len(labels), "accuracy": float((preds == labels).mean()),
               "misclassified": [{"index": int(i), "true": s.classes[labels[i]],
                                  "predicted": s.classes[preds[i]], "confidence": float(conf[i])}
                                 for i in wrong],
               "per_class": confusion(s, labels, preds), "method_images": len(few),
               "faithfulness": explain.compare_methods(s, pics[:len(few)], preds[few], args.method)}
    if len(right):
        hits = torch.as_tensor(labels[right], device=device)
        summary["attack"] = {"method": args.attack, "eps": args.eps}
        summary["adversarial"] = explain.attacked(s, images[len(shown):], hits, args.attack, args.eps)
    elif args.adversarial:
        print("note: no correctly classified test image to attack", file=sys.stderr)
    return summary


def main(argv=None):
    t0 = time.perf_counter()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    state = checkpoint.load(args.checkpoint)
    device = pick_device(args.device)
    model = load_model(state, args.checkpoint, device)
    data_dir = args.data_dir or state["config"].get("data_dir", "data")
    data = open_data(state, data_dir)
    layer = explain.find_layer(model, args.layer, data.image_size)  # a bad layer fails before the long work
    out = args.out or Path(args.checkpoint).parent / "viz"
    out.mkdir(parents=True, exist_ok=True)
    s = explain.Study(model, layer, args.layer, list(state["classes"]), tuple(state["mean"]),
                      tuple(state["std"]), data.image_size, out)
    summary = {"checkpoint": str(args.checkpoint), "data_dir": str(data_dir),
               **study(s, args, state, data, device), "seconds": time.perf_counter() - t0}
    t = tables(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(report(summary, state, t))
    print(f"test accuracy {summary['accuracy']:.2%} on {summary['test_images']} images")
    for name, text in t.items():
        print(f"\n{name.replace('_', ' ')}:\n{text}")
    print(f"\nwrote {out}/report.md and its pictures in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    cli.run(main)
