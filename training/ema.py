"""An exponential moving average of the weights (and BatchNorm statistics), updated after every step,
evaluated and saved beside the raw weights: a cheap ensemble over the last few hundred steps.

The decay warms up as min(decay, (1 + t) / (10 + t)) at step t (as TensorFlow's and timm's EMAs do):
early on the average follows the weights closely instead of dragging the random initialisation along
(measured: a fixed 0.99 over a 156-step run kept 21 % of the initial weights, and 18 % accuracy).
"""
import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)  # starts at the initial weights
        pairs = list(zip(self._tensors(self.model), self._tensors(model)))
        self._averaged = [mine for mine, _ in pairs if mine.is_floating_point()]
        self._followed = [theirs for mine, theirs in pairs if mine.is_floating_point()]
        self._counts = [(mine, theirs) for mine, theirs in pairs if not mine.is_floating_point()]  # BN counts

    @staticmethod
    def _tensors(model: nn.Module) -> list:
        return [*model.parameters(), *model.buffers()]

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: int):
        """After training step `step` (0-based): ema = d * ema + (1 - d) * weights, d = decay_at(step),
        for every tensor in one fused call."""
        torch._foreach_lerp_(self._averaged, self._followed, 1 - self.decay_at(step))
        for mine, theirs in self._counts:
            mine.copy_(theirs)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict):
        self.model.load_state_dict(state)
