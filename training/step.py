"""One training step and one evaluation pass; totals stay on the device (no host sync per batch)."""
import numpy as np
import torch
import torch.nn.functional as F


def train_step(model, optimizer, scaler, autocast, x, y, smoothing=0.0, noise=None):
    """Forward, backward, update. Returns the loss and correct count as tensors (no host sync).
    noise: a GradientNoise, added to the unscaled gradients before the update."""
    with autocast:
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if noise is not None:
        scaler.unscale_(optimizer)  # the noise is in the gradient's own units; step() won't unscale again
        noise.add()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach().float(), (logits.argmax(1) == y).sum()


class GradientNoise:
    """Annealed Gaussian gradient noise (Neelakantan et al. 2015): N(0, eta / (1 + t)^0.55) added to
    every gradient at step t. The draw is a function of (seed, t): the same on every rank (after DDP's
    all-reduce the gradients are equal and must stay so) and again after --resume."""

    def __init__(self, params, eta: float, seed: int, device, step: int = 0):
        self.params, self.eta, self.seed, self.step = list(params), eta, seed, step
        self.generator = torch.Generator(device)

    def std(self, step: int) -> float:
        return (self.eta / (1 + step) ** 0.55) ** 0.5

    @torch.no_grad()
    def add(self):
        self.generator.manual_seed(int(np.random.SeedSequence([self.seed, self.step]).generate_state(1)[0]))
        std = self.std(self.step)
        for p in self.params:
            if p.grad is not None:
                p.grad.add_(torch.randn(p.grad.shape, generator=self.generator, device=p.grad.device,
                                        dtype=p.grad.dtype), alpha=std)
        self.step += 1


def logits_of(model, x, tta: bool):
    """The model's logits in float32; with tta, averaged with those of the mirror images."""
    logits = model(x).float()
    if tta:
        logits = (logits + model(x.flip(3)).float()) / 2  # dim 3 is the width in NCHW
    return logits


@torch.inference_mode()
def evaluate(model, loader, autocast, device, tta: bool = False) -> torch.Tensor:
    """(loss sum, correct, images) over every image of this shard exactly once, as float64 on device."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for x, y in loader:
        with autocast:
            logits = logits_of(model, x, tta)
        loss = F.cross_entropy(logits, y, reduction="sum")
        sums += torch.stack([loss, (logits.argmax(1) == y).sum(), torch.full_like(loss, len(y))])
    model.train()
    return sums
