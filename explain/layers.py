"""Where a CAM can look: each stage (`layer3`: its last block) and each residual block (`layer3.1`),
refused when its map is too coarse to say where in the image."""
import torch
from torch import nn

from common.cli import UsageError
from nets.resnet import BasicBlock

MIN_MAP = 5  # a coarser map (layer4 on CIFAR is 4x4) says little about where in the image


def layer_names(model: nn.Module) -> list:
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
    if name not in layer_names(model):
        fine = [n for n in layer_names(model) if fine_enough(model, n, image_size)]  # only what would pass
        raise UsageError(f"--layer {name!r} is not a layer of this model; choose one of {', '.join(fine)}")
    if not fine_enough(model, name, image_size):
        h, w = map_size(model, block(model, name), image_size)
        fine = [n for n in stage_names(model) if fine_enough(model, n, image_size)] or ["none"]
        raise UsageError(f"--layer {name} gives a {h}x{w} map on {image_size}px images, too coarse for a "
                         f"CAM (at least {MIN_MAP}x{MIN_MAP} needed): use {fine[-1]} or an earlier layer")
    return block(model, name)
