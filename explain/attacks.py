"""Adversarial examples: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), in pixel space."""
import torch
import torch.nn.functional as F
from torch import nn

from .pixels import normalise

PGD_STEPS = 10


def attack(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, eps: float, mean, std,
           method="fgsm") -> torch.Tensor:
    """Adversarial pixels within eps (in [0, 1] units) of `pixels` per value, kept in [0, 1].
    fgsm: one signed-gradient step of eps. pgd: PGD_STEPS steps of 2.5 eps / PGD_STEPS from a random
    start, projected back each time."""
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
