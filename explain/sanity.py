"""The model-randomisation sanity check (Adebayo et al. 2018, cascading): re-draw the weights block by
block from the output back, and ask how much each method's maps change. A map that stays the same
when the weights it claims to explain are random explains the image (its edges, its brightness), not
the model. The measure is Spearman's rank correlation between the trained and the randomised model's
map of the same image for the same class: 1 = the same ordering of pixels, 0 = unrelated.

It says whether a method depends on the weights; not whether its map is where the object is, nor how
faithful it is (ROAD's question, explain.faithfulness)."""
import copy

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

THRESHOLD = 0.5  # a method whose maps keep a mean correlation above this with every block random is flagged


def blocks(model: nn.Module) -> list:
    """The model's top-level parts that hold weights, from the output back (ResNet: fc, layer4, ...,
    stem): the cascade's order."""
    return [name for name, m in reversed(list(model.named_children())) if any(True for _ in m.parameters())]


def randomise(module: nn.Module, generator: torch.Generator):
    """Fresh weights in place: convolutions and linear layers He-normal (what a network starts from),
    biases 0, batch norms the identity (their running statistics described the trained weights' outputs)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = torch.empty(m.weight.shape)  # drawn on the CPU: the generator's device
            m.weight.copy_(nn.init.kaiming_normal_(weight, nonlinearity="relu", generator=generator))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()  # weight 1, bias 0, running mean 0, var 1: draws nothing


def cascade(model: nn.Module, seed: int = 0):
    """(depth, model) for each step: a copy of the model with the first 1, 2, ... blocks() random,
    named by the last block randomised. One copy, randomised further at each step: use it before the
    next; the model itself is never changed."""
    generator, current = torch.Generator().manual_seed(seed), copy.deepcopy(model)
    for name in blocks(model):
        with torch.no_grad():
            randomise(current.get_submodule(name), generator)
        yield name, current


def rank_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's correlation of each pair of maps (N, H, W); a constant map has no order: 1 with
    another constant map (nothing changed), 0 otherwise."""
    ra, rb = (rankdata(m.reshape(len(m), -1), axis=1) for m in (a, b))
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    norm = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    flat_a, flat_b = (np.ptp(m.reshape(len(m), -1), axis=1) == 0 for m in (a, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / norm
    return np.where(flat_a | flat_b, (flat_a & flat_b).astype(float), rho)
