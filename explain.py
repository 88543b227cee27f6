"""What viz.py computes: class activation maps (pytorch_grad_cam), their faithfulness, and attacks.

Everything here takes normalised NCHW float32 images and a model in eval mode, uncompiled (hooks on a
compiled model are ignored), and works on whatever device the model and images share.
"""
import contextlib
import io

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import nn

from cli import UsageError
from nets.resnet import BasicBlock

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM,
           "scorecam": ScoreCAM, "ablationcam": AblationCAM}
GRADIENT_FREE = ("scorecam", "ablationcam")  # one forward pass per channel of the layer: slow on a CPU
MIN_MAP = 5            # a coarser map (layer4 on CIFAR is 4x4) says little about where in the image
MASKED_BATCH = 64      # masked or ablated copies per forward pass (ScoreCAM, AblationCAM)
ROAD_PERCENTILES = (20, 40, 60, 80)  # remove 80, 60, 40, 20 % of the pixels; averaged
PGD_STEPS = 10


# ------------------------------------------------------------------------------------------ layers
def layer_names(model: nn.Module) -> list:
    """Where a CAM can look: each stage (`layer3`: its last block) and each residual block (`layer3.1`)."""
    def is_stage(m):
        return isinstance(m, nn.Sequential) and any(isinstance(c, BasicBlock) for c in m.children())
    return [name for name, m in model.named_modules() if isinstance(m, BasicBlock) or is_stage(m)]


def stage_names(model: nn.Module) -> list:
    return [name for name in layer_names(model) if "." not in name]


def map_size(model: nn.Module, layer: nn.Module, image_size: int) -> tuple:
    """(h, w) of the layer's output for one image of the real size, seen by a forward hook."""
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(output.shape[-2:]))
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        handle.remove()
    return tuple(seen[0])


def block(model: nn.Module, name: str) -> nn.Module:
    """The module a layer name means: a stage's output is its last block's."""
    module = model.get_submodule(name)
    return module[-1] if isinstance(module, nn.Sequential) else module


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
    with METHODS[method](model=model, target_layers=[layer]) as cam:
        cam.batch_size = MASKED_BATCH  # read by ScoreCAM and AblationCAM only
        # float32: fp16 breaks the resize and EigenCAM's SVD. Gradients on: the hooks need them.
        # The gradient-free methods print a progress bar per image to stderr: not ours to show.
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


# ----------------------------------------------------------------------------------------- attacks
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
        x = x.detach() + step_size * grad.sign()  # ascend the loss of the true class
        x = torch.minimum(torch.maximum(x, pixels - eps), pixels + eps).clamp(0, 1)
    return x
