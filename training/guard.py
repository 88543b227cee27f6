"""When a run must stop: a signal (finish the step, save, exit) or a non-finite value (stop at once,
name it, write no checkpoint of it).

Under DDP every rank must stop at the same step, so the flags are combined with one tiny all-reduce
every CHECK_EVERY steps and at the end of each epoch. A single process reads its signal flag at
every step (free) and the non-finite flag, which lives on the device, every CHECK_EVERY steps.
"""
import math
import signal

import torch

from common.cli import Stopped, UserError

from . import distributed

CHECK_EVERY = 25  # steps between host syncs of the non-finite flag (and, under DDP, of signals)


class Diverged(UserError):
    """A loss, parameter or buffer became inf or nan."""


class Guard:
    """A context: the signal handlers are the run's inside it, the caller's again after it."""

    def __init__(self, device, lr: float):
        self.device, self.lr = device, lr
        self.signum = 0
        self.first_bad_step = torch.tensor(-1, device=device)
        self._previous = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _on_signal(self, signum, frame):
        if self.signum:  # a second signal: stop at once
            raise Stopped(f"stopped by a second signal {signum} before the step could be saved", signum)
        self.signum = signum

    def new_epoch(self):
        self.first_bad_step.fill_(-1)

    def watch(self, loss: torch.Tensor, step: int):
        """Remember the first step whose loss is not finite, without a host sync."""
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~loss.isfinite(), step,
                                          self.first_bad_step)

    def should_stop(self, step: int, epoch_end: bool = False) -> bool:
        """True when a signal came or the loss went non-finite (on any rank, agreed by all)."""
        if not (epoch_end or step % CHECK_EVERY == 0):
            return bool(self.signum) and not distributed.active()
        flags = distributed.most(torch.stack([torch.tensor(self.signum, device=self.device),
                                              self.first_bad_step]))
        self.signum, bad = (int(v) for v in flags.tolist())
        self.first_bad_step.fill_(bad)
        return bool(self.signum) or bad >= 0

    def check_loss(self, epoch: int, kept: str):
        bad = int(self.first_bad_step)
        if bad >= 0:
            raise Diverged(f"the training loss became non-finite at epoch {epoch + 1}, step {bad + 1}: "
                           f"lower --lr (was {self.lr:.3g}); {kept}")

    def check_models(self, models, metrics: dict, epoch: int, kept: str):
        """Before a checkpoint: every parameter and buffer finite (the weights and their EMA), every
        evaluation loss too."""
        names = [name for model in models for name in nonfinite(model)]
        if names:
            raise Diverged(f"{names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''} became "
                           f"non-finite in epoch {epoch + 1}: lower --lr (was {self.lr:.3g}); {kept}")
        for split, m in metrics.items():
            if not math.isfinite(m["loss"]):
                raise Diverged(f"the {split} loss is non-finite after epoch {epoch + 1} though every weight "
                               f"is finite (an overflow in the forward pass): lower --lr (was {self.lr:.3g})"
                               f" or use --precision fp32; {kept}")


def nonfinite(model: torch.nn.Module) -> list:
    """Names of the parameters and floating-point buffers holding an inf or nan (one host sync)."""
    tensors = [(n, t) for n, t in [*model.named_parameters(), *model.named_buffers()]
               if t.is_floating_point()]
    finite = torch.stack([torch.isfinite(t).all() for _, t in tensors]).tolist()
    return [n for (n, _), ok in zip(tensors, finite) if not ok]
