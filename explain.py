"""The CAM and attack half of viz.py: class activation maps (pytorch_grad_cam), their faithfulness,
adversarial attacks, and the pictures that show them.

Everything takes normalised NCHW float32 images and a model in eval mode, uncompiled (hooks on a
compiled model are ignored), and works on whatever device the model and images share.
"""
import contextlib
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure  # no pyplot: no global figures, no GUI backend
from pytorch_grad_cam import AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import nn

from common.cli import UsageError
from nets.resnet import BasicBlock

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM,
           "scorecam": ScoreCAM, "ablationcam": AblationCAM}
GRADIENT_FREE = ("scorecam", "ablationcam")  # a forward pass per channel of the layer: slow on a CPU
MIN_MAP = 5            # a coarser map (layer4 on CIFAR is 4x4) says little about where in the image
MASKED_BATCH = 64      # masked or ablated copies per forward pass (ScoreCAM, AblationCAM)
ROAD_PERCENTILES = (20, 40, 60, 80)  # remove 80, 60, 40 and 20 % of the pixels; averaged
PGD_STEPS = 10


# ------------------------------------------------------------------------------------------ layers
def layer_names(model: nn.Module) -> list:
    """Where a CAM can look: each stage (`layer3`: its last block) and each residual block (`layer3.1`)."""
    def is_stage(m):
        return isinstance(m, nn.Sequential) and any(isinstance(c, BasicBlock) for c in m.children())
    return [name for name, m in model.named_modules() if isinstance(m, BasicBlock) or is_stage(m)]


def stage_names(model: nn.Module) -> list:
    return [name for name in layer_names(model) if "." not in name]


def block(model: nn.Module, name: str) -> nn.Module:
    """The module a layer name means: a stage's output is its last block's."""
    module = model.get_submodule(name)
    return module[-1] if isinstance(module, nn.Sequential) else module


def map_size(model: nn.Module, layer: nn.Module, image_size: int) -> tuple:
    """(h, w) of the layer's output for one image of the real size, seen by a forward hook."""
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(output.shape[-2:]))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        handle.remove()
    return tuple(seen[0])


def fine_enough(model: nn.Module, name: str, image_size: int) -> bool:
    return min(map_size(model, block(model, name), image_size)) >= MIN_MAP


def find_layer(model: nn.Module, name: str, image_size: int) -> nn.Module:
    """The block `name` names; UsageError if there is none or its map is too coarse for a CAM."""
    valid = layer_names(model)
    if name not in valid:
        raise UsageError(f"--layer {name!r} is not a layer of this model; choose one of {', '.join(valid)}")
    if not fine_enough(model, name, image_size):
        h, w = map_size(model, block(model, name), image_size)
        fine = [n for n in stage_names(model) if fine_enough(model, n, image_size)] or ["none"]
        raise UsageError(f"--layer {name} gives a {h}x{w} map on {image_size}px images, too coarse for a "
                         f"CAM (at least {MIN_MAP}x{MIN_MAP} needed): use {fine[-1]} or an earlier layer")
    return block(model, name)


# -------------------------------------------------------------------------------------------- CAMs
def cams(model: nn.Module, layer: nn.Module, images: torch.Tensor, classes, method="gradcam") -> np.ndarray:
    """(N, H, W) float32 maps in [0, 1] at the image size: where `layer` sees each image's class."""
    targets = [ClassifierOutputTarget(int(c)) for c in classes]  # one per sample
    with METHODS[method](model=model, target_layers=[layer]) as cam:  # hooks removed on exit
        cam.batch_size = MASKED_BATCH  # read by ScoreCAM and AblationCAM only
        # float32: fp16 breaks the resize and EigenCAM's SVD. Gradients on: the hooks need them.
        # The gradient-free methods draw a progress bar per image on stderr: not ours to show.
        with torch.enable_grad(), contextlib.redirect_stderr(io.StringIO()):
            out = cam(input_tensor=images.float(), targets=targets)
    if out is None:  # the library's __exit__ swallows an IndexError and returns nothing
        raise RuntimeError(f"{method} failed on {len(images)} images")
    return out


def faithfulness(model: nn.Module, images: torch.Tensor, maps: np.ndarray, classes) -> dict:
    """ROAD (Rong et al. 2022): mean change of the class's softmax confidence when the most relevant
    (MoRF) or the least relevant (LeRF) pixels are removed by noisy linear imputation, averaged over
    ROAD_PERCENTILES. A faithful map: MoRF falls far, LeRF hardly; lerf - morf > 0."""
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    torch.manual_seed(0)  # the imputer adds noise: the same numbers on every run
    morf = ROADMostRelevantFirstAverage(list(ROAD_PERCENTILES))(images.float(), maps, targets, model)
    lerf = ROADLeastRelevantFirstAverage(list(ROAD_PERCENTILES))(images.float(), maps, targets, model)
    return {"morf": float(np.mean(morf)), "lerf": float(np.mean(lerf)), "score": float(np.mean(lerf - morf))}


# ------------------------------------------------------------------------------------------ pixels
def _stats(mean, std, like: torch.Tensor):
    return (torch.as_tensor(mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1),
            torch.as_tensor(std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1))


def to_pixels(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised images back to RGB in [0, 1] (the clamp only absorbs float error)."""
    m, s = _stats(mean, std, images)
    return (images * s + m).clamp(0, 1)


def normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    m, s = _stats(mean, std, pixels)
    return (pixels - m) / s


def attack(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, eps: float, mean, std,
           method="fgsm") -> torch.Tensor:
    """Adversarial pixels within eps (in [0, 1] units) of `pixels` per value, kept in [0, 1].
    fgsm: one signed-gradient step of eps (Goodfellow et al. 2015). pgd: PGD_STEPS steps of
    2.5 eps / PGD_STEPS from a random start, projected back each time (Madry et al. 2018)."""
    steps, step_size = (1, eps) if method == "fgsm" else (PGD_STEPS, 2.5 * eps / PGD_STEPS)
    x = pixels.detach().float()
    if method == "pgd":
        x = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(normalise(x, mean, std)), labels)
            grad, = torch.autograd.grad(loss, x)
        x = x.detach() + step_size * grad.sign()  # up the loss of the true class
        x = torch.minimum(torch.maximum(x, pixels - eps), pixels + eps).clamp(0, 1)
    return x


# ---------------------------------------------------------------------------------------- pictures
def hwc(pixels: torch.Tensor) -> np.ndarray:
    return pixels.permute(1, 2, 0).detach().cpu().numpy().astype(np.float32)


def overlay(pixels: torch.Tensor, cam: np.ndarray, title: str) -> tuple:
    """A grid cell: the CAM over the image; its title says when the map is empty."""
    if not cam.any():
        title = f"{title} — empty" if title else "empty"
    return show_cam_on_image(hwc(pixels), cam, use_rgb=True), title


def grid(rows: list, path: Path, title: str, cam_bar=True, cell=2.0):
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
    fig.savefig(path)


def wrap(groups: list, per_row: int) -> list:
    """Groups of cells (one group per image), per_row groups side by side on a row, a gap between."""
    rows = []
    for i in range(0, len(groups), per_row):
        row = []
        for group in groups[i:i + per_row]:
            row += ([None] if row else []) + group
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- studies
@dataclass
class Study:
    """The checkpoint under study, and where its pictures go."""
    model: nn.Module
    layer: nn.Module
    layer_name: str
    classes: list
    mean: tuple
    std: tuple
    image_size: int
    out: Path

    def pixels(self, images):
        return to_pixels(images, self.mean, self.std)

    def label(self, true, pred, conf) -> str:
        return f"{self.classes[true]} → {self.classes[pred]} ({conf:.0%})"


def class_pairs(s: Study, images, labels, preds, conf):
    """gradcam.png: each image's Grad-CAM for its predicted and for its true class."""
    on_pred, on_true = cams(s.model, s.layer, images, preds), cams(s.model, s.layer, images, labels)
    cells = [[(hwc(p), s.label(y, z, c)), overlay(p, a, f"for {s.classes[z]} (predicted)"),
              overlay(p, b, f"for {s.classes[y]} (true)")]
             for p, y, z, c, a, b in zip(s.pixels(images), labels, preds, conf, on_pred, on_true)]
    grid(wrap(cells, 2), s.out / "gradcam.png", f"Grad-CAM at {s.layer_name}: predicted vs true class")


def by_depth(s: Study, image, label, pred, conf):
    """layers.png: one image's Grad-CAM at the end of every stage whose map is fine enough."""
    pix = s.pixels(image[None])[0]
    row = [(hwc(pix), s.label(label, pred, conf))]
    for name in [n for n in stage_names(s.model) if fine_enough(s.model, n, s.image_size)]:
        h, w = map_size(s.model, block(s.model, name), s.image_size)
        row.append(overlay(pix, cams(s.model, block(s.model, name), image[None], [pred])[0],
                           f"end of {name} ({h}x{w})"))
    grid([row], s.out / "layers.png", f"Grad-CAM by depth, for the predicted class {s.classes[pred]}")


def compare_methods(s: Study, images, classes, names: list) -> dict:
    """methods.png, and each method's faithfulness and seconds on these images for `classes`."""
    pix, columns, scores = s.pixels(images), [], {}
    for name in names:
        t0 = time.perf_counter()
        maps = cams(s.model, s.layer, images, classes, name)
        scores[name] = {**faithfulness(s.model, images, maps, classes), "seconds": time.perf_counter() - t0}
        head = f"{name}\nLeRF−MoRF {scores[name]['score']:+.3f}"  # the column's title, on the top row
        columns.append([overlay(p, m, head if k == 0 else "") for k, (p, m) in enumerate(zip(pix, maps))])
    rows = [[(hwc(p), f"predicted {s.classes[c]}")] + [col[k] for col in columns]
            for k, (p, c) in enumerate(zip(pix, classes))]
    grid(rows, s.out / "methods.png", f"CAM methods at {s.layer_name}, for the predicted class")
    return scores


def attacked(s: Study, images, labels: torch.Tensor, method: str, eps: float) -> list:
    """adversarial.png: original vs attacked (eps in /255 units), each with its prediction and Grad-CAM."""
    pix = s.pixels(images)
    adv = attack(s.model, pix, labels, eps / 255, s.mean, s.std, method)
    with torch.no_grad():
        before, after = (s.model(normalise(x, s.mean, s.std)).softmax(1) for x in (pix, adv))
    fooled_as = after.argmax(1)
    cam_true = cams(s.model, s.layer, images, labels)
    cam_adv = cams(s.model, s.layer, normalise(adv, s.mean, s.std), fooled_as)
    gain = 0.5 / (eps / 255)  # the perturbation, scaled to fill mid-grey +- 0.5
    cells, rows = [], []
    for k, (y, z) in enumerate(zip(labels.tolist(), fooled_as.tolist())):
        rows.append({"true": s.classes[y], "before": float(before[k, y]), "predicted": s.classes[z],
                     "confidence": float(after[k, z]), "true_after": float(after[k, y]), "fooled": z != y})
        cells.append([(hwc(pix[k]), f"{s.classes[y]} ({before[k, y]:.0%})"),
                      overlay(pix[k], cam_true[k], f"CAM {s.classes[y]}"),
                      (hwc(adv[k]), f"{'fooled' if z != y else 'held'}: {s.classes[z]} ({after[k, z]:.0%})"),
                      overlay(adv[k], cam_adv[k], f"CAM {s.classes[z]}"),
                      (hwc((0.5 + gain * (adv[k] - pix[k])).clamp(0, 1)), f"perturbation x{gain:.0f}")])
    grid(wrap(cells, 2), s.out / "adversarial.png",
         f"{method.upper()} at ε = {eps:g}/255: original vs attacked, Grad-CAM at {s.layer_name}")
    return rows
