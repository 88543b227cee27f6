"""Pictures: grids of images and CAM overlays, the training curves, the confusion matrix.
matplotlib's Figure without pyplot: no global figures, no GUI backend. Each function returns its
Figure: a notebook shows it inline, viz.py saves it."""
import math

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, MaxNLocator

from .pixels import hwc


def overlay(pixels: torch.Tensor, cam: np.ndarray, title: str) -> tuple:
    """A grid cell: the CAM over the image; its title says when the map is empty."""
    from pytorch_grad_cam.utils.image import show_cam_on_image  # grad-cam loads with the first map (cams.py)
    if not cam.any():
        title = f"{title} — empty" if title else "empty"
    return show_cam_on_image(hwc(pixels), cam, use_rgb=True), title


def grid(rows: list, title: str, cam_bar=True, cell=2.0) -> Figure:
    """A table of images: rows of (image HWC, title) cells, None for a gap; a colour bar for overlays."""
    cols = max(len(r) for r in rows)
    widths = [0.12 if c is None else 1 for c in rows[0] + [0] * (cols - len(rows[0]))]  # gaps are narrow
    width = max(cell * sum(widths) + (0.9 if cam_bar else 0), 4.5)  # room for the title
    fig = Figure(figsize=(width, cell * len(rows) + 0.6), layout="constrained", dpi=110)
    axes = fig.subplots(len(rows), cols, squeeze=False, gridspec_kw={"width_ratios": widths})
    for ax_row, cells in zip(axes, rows):
        for ax, item in zip(ax_row, cells + [None] * (cols - len(cells))):
            ax.set_axis_off()
            if item is not None:
                ax.imshow(item[0], interpolation="nearest")
                ax.set_title(item[1], fontsize=8)
    if cam_bar:
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes, shrink=0.8, aspect=25)
        bar.ax.set_title("CAM", fontsize=9)
        title += "\n(each map scaled to [0, 1]; an empty map has no positive evidence)"
    fig.suptitle(title, fontsize=10)
    return fig


def wrap(groups: list, per_row: int) -> list:
    """Groups of cells (one group per image), per_row groups side by side on a row, a gap between."""
    rows = []
    for i in range(0, len(groups), per_row):
        row = []
        for group in groups[i:i + per_row]:
            row += ([None] if row else []) + group
        rows.append(row)
    return rows


class SameDecimals(Formatter):
    """Every tick label of a log axis, major and minor, with one number of decimals: the fewest that
    show the smallest tick to two significant digits and tell all ticks apart (2.30 and 0.85 line up;
    not 2.3 and 0.8512, nor 2.3 twice). Over more than a decade only minor ticks at 2x and 5x are
    labelled, so labels never crowd."""

    def __init__(self, minor: bool = False):
        self.minor = minor

    def __call__(self, x, pos=None):
        lo, hi = sorted(self.axis.get_view_interval())
        if self.minor and hi > 10 * lo and round(x / 10 ** math.floor(math.log10(x))) not in (2, 5):
            return ""
        return f"{x:.{self.decimals(lo, hi)}f}"

    def decimals(self, lo: float, hi: float) -> int:
        ticks = [t for t in (*self.axis.get_majorticklocs(), *self.axis.get_minorticklocs()) if lo <= t <= hi]
        d = max(1, 1 - math.floor(math.log10(min((t for t in ticks if t > 0), default=1))))
        while d < 6 and len({f"{t:.{d}f}" for t in ticks}) < len(set(ticks)):
            d += 1
        return d


def plot_curves(history: list, lr_steps: list) -> Figure:
    """Loss (log scale) and accuracy per epoch; the LR of every step (OneCycle's shape, plateau's cuts).
    The final test accuracies are in the legend, where no point can hide them."""
    fig = Figure(figsize=(15, 4.2), layout="constrained", dpi=110)
    loss, acc, lr = fig.subplots(1, 3)
    epochs = [r["epoch"] for r in history]
    ema = bool(history) and "ema_test_acc" in history[0]
    names = {"train": "train", "val": "validation", "test": "test, raw weights" if ema else "test",
             "ema_test": "test, EMA weights"}
    for split, style in (("train", "-o"), ("val", "--s"), ("test", "-s"), ("ema_test", ":^")):
        if history and f"{split}_loss" in history[0]:
            final = f" (final {history[-1][f'{split}_acc']:.2%})" if "test" in split else ""
            loss.plot(epochs, [r[f"{split}_loss"] for r in history], style, label=names[split])
            acc.plot(epochs, [100 * r[f"{split}_acc"] for r in history], style, label=names[split] + final)
    lr.plot(range(1, len(lr_steps) + 1), lr_steps, color="tab:purple")
    loss.set(title="loss (log scale)", xlabel="epoch", yscale="log")
    loss.yaxis.set_major_formatter(SameDecimals())  # 2.30, not 2.3 x 10^0
    loss.yaxis.set_minor_formatter(SameDecimals(minor=True))
    acc.set(title="accuracy (%)", xlabel="epoch", ylim=(0, 100))
    lr.set(title="learning rate of each step", xlabel="step")
    for ax in (loss, acc):
        ax.legend()
        # Whole epochs only, one tick at least: a single epoch's axis otherwise shows 0.945..1.050.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    for ax in (loss, acc, lr):
        ax.grid(alpha=0.3)
    fig.suptitle("training history" if history else "training history: no finished epoch yet")
    return fig


def plot_confusion(matrix: np.ndarray, classes: list) -> Figure:
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
    return fig
