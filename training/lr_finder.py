"""LR range test (Smith 2015, sec. 3.3): raise the LR exponentially, watch the smoothed loss.

The suggestion is the LR where the smoothed loss falls fastest (steepest descent against log LR), a
usual choice for OneCycle's max LR. Everything the trial steps change (model, optimizer, gradient
scaler) is restored afterwards, so the run that follows starts as if no test had been made.
"""
import copy
import math
from dataclasses import dataclass

import numpy as np


@dataclass
class RangeTest:
    lrs: list
    losses: list  # smoothed
    suggestion: float


def range_test(step, optimizer, batches, restore=(), start_lr=1e-6, end_lr=10.0, steps=200,
               beta=0.98, diverge=4.0) -> RangeTest:
    """step(x, y) -> loss tensor runs one training step with optimizer; batches yields (x, y) forever;
    restore: the objects (with state_dict/load_state_dict) to put back as they were."""
    saved = [copy.deepcopy(obj.state_dict()) for obj in restore]
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    for i, (x, y) in zip(range(steps), batches):
        lr = start_lr * factor ** i
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = float(step(x, y))
        avg = beta * avg + (1 - beta) * loss
        smoothed = avg / (1 - beta ** (i + 1))  # bias-corrected exponential moving average
        if not math.isfinite(smoothed) or smoothed > diverge * best:
            break  # the loss exploded: higher LRs tell nothing more
        best = min(best, smoothed)
        lrs.append(lr)
        losses.append(smoothed)
    for obj, state in zip(restore, saved):
        obj.load_state_dict(state)
    return RangeTest(lrs, losses, steepest_descent(lrs, losses))


def steepest_descent(lrs, losses) -> float:
    """LR at the most negative slope d loss / d log lr (the first and last tenth are too noisy)."""
    if len(lrs) < 10:
        return lrs[len(lrs) // 2] if lrs else float("nan")
    slopes = np.gradient(np.asarray(losses), np.log(lrs))
    lo, hi = len(lrs) // 10, len(lrs) - len(lrs) // 10
    return float(lrs[lo + int(np.argmin(slopes[lo:hi]))])


def plot(result: RangeTest, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggestion, color="tab:red", ls="--", label=f"suggested max LR {result.suggestion:.2e}")
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="smoothed training loss",
           title="LR range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
