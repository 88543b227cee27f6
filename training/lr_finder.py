"""LR range test (Smith 2015, sec. 3.3): raise the LR exponentially, watch the smoothed loss.

The suggestion is the LR where the smoothed loss falls fastest (steepest descent against log LR), a
usual choice for OneCycle's max LR. A test too short for its smoothing is refused before it runs
(config.LR_TEST_RULE). A curve can still give no usable answer: a loss that never falls, or one that
explodes from the start; the test then says why and what would work instead of suggesting a number,
and `--lr auto` refuses to train on it (its plot is written all the same). The test trains its own
model from the run's seed, so the run that follows starts exactly as it would with the same LR given by
hand.
"""
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from common import cli
from common.cli import UsageError

from . import distributed, rng
from .build import build_model, build_optimizer, precision
from .config import Config, resolve
from .setup import Setup, prepare
from .rundir import claim
from .step import train_step

START_LR, END_LR = 1e-6, 10.0  # the sweep: wide enough for every optimizer here
MIN_DROP = 0.05        # the smoothed loss must fall at least this much (relative) before it rises
EARLY_STOP = 0.2       # an explosion within this share of the sweep is divergence from the start


@dataclass
class RangeTest:
    lrs: list
    losses: list          # smoothed
    suggestion: float     # nan when there is no usable answer
    problem: str = ""     # what the curve did that gives no usable LR, or ""
    advice: str = ""      # what would work instead (advice()), or ""

    def line(self) -> str:
        if self.problem:
            return f"LR range test: no usable LR: {self.problem}: {self.advice}"
        return f"LR range test: suggested max LR {self.suggestion:.3g}"

    def figure(self):
        """The curve and the suggestion, as a matplotlib Figure (imported here: a run without the test
        never pays for matplotlib)."""
        from matplotlib.figure import Figure
        fig = Figure(figsize=(6, 4), dpi=120, layout="constrained")
        ax = fig.subplots()
        ax.plot(self.lrs, self.losses)
        if not self.problem:
            ax.axvline(self.suggestion, color="tab:red", ls="--", label=f"suggested max LR {self.suggestion:.2e}")
            ax.legend()
        ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="smoothed training loss",
               title="LR range test" + (": no usable LR" if self.problem else ""))
        return fig


def range_test(step, optimizer, batches, start_lr=START_LR, end_lr=END_LR, steps=200, beta=0.98,
               diverge=4.0) -> RangeTest:
    """step(x, y) -> loss tensor runs one training step with optimizer; batches yields (x, y)."""
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
    problem = verdict(lrs, losses, steps)
    return RangeTest(lrs, losses, float("nan") if problem else steepest_descent(lrs, losses), problem)


def verdict(lrs, losses, steps: int) -> str:
    """What the curve did that gives no usable LR, or "" when it gives one."""
    if exploded_early(len(lrs), steps):
        return f"the loss exploded after {len(lrs)} of {steps} steps, at LR {lrs[-1] if lrs else 0:.1e}"
    start = float(np.mean(losses[:max(1, len(losses) // 10)]))
    drop = (start - min(losses)) / start
    if drop < MIN_DROP:
        return f"the smoothed loss never fell by {MIN_DROP:.0%} (at best {drop:.1%}) before it rose"
    return ""


def exploded_early(kept: int, steps: int) -> bool:
    return kept < EARLY_STOP * steps


def advice(result: RangeTest, cfg: Config) -> str:
    """What would work instead of a curve with no usable LR, naming options as the reader gives them
    (flags to a script's user, Config's fields to Python code): the test's one advice."""
    if exploded_early(len(result.lrs), cfg.find_lr_steps):
        return ("a loss that explodes at an LR this small is not the LR's doing: check the data (labels that "
                "match the images) and the model")
    default = resolve(replace(cfg, lr=0.0)).lr
    train = (f"drop {cli.spelled('lr', 'auto')} to train at the default LR" if cfg.lr == "auto" else
             f"train at the default LR (leave {cli.spelled('lr')} out)")
    return (f"the loss hardly responds to the LR within this test, so its curve names none: {train}, "
            f"{default:.3g} here (the optimizer's, scaled to the batch), or give {cli.spelled('lr')} a value of "
            f"your own; a longer test ({cli.spelled('find_lr_steps')} above {cfg.find_lr_steps}) trains more at "
            "each LR and may show a fall")


def steepest_descent(lrs, losses) -> float:
    """LR at the most negative slope d loss / d log lr (the first and last tenth are too noisy)."""
    if len(lrs) < 10:
        return lrs[len(lrs) // 2] if lrs else float("nan")
    slopes = np.gradient(np.asarray(losses), np.log(lrs))
    lo, hi = len(lrs) // 10, len(lrs) - len(lrs) // 10
    return float(lrs[lo + int(np.argmin(slopes[lo:hi]))])


def search(setup: Setup) -> RangeTest:
    """The range test on a model of the run's own, seeded as the run's, on its own stream of batches;
    its plot written to RUN/lr_find.png (rank 0), usable or not."""
    cfg, device = setup.cfg, setup.process.device
    rng.seed_everything(cfg.seed)
    model = build_model(cfg, len(setup.data.classes), device)
    optimizer = build_optimizer(replace(cfg, lr=START_LR), model, device)  # the test sets each step's LR
    autocast, scaler, _ = precision(cfg, device)
    loader = setup.train_loader(cfg.batch_size, seed=cfg.seed + 1)
    batches = (b for _ in iter(int, 1) for b in loader)  # as many epochs as it takes
    result = range_test(lambda x, y: train_step(model, optimizer, scaler, autocast, x, y,
                                                smoothing=cfg.label_smoothing)[0],
                        optimizer, batches, steps=cfg.find_lr_steps)
    if result.problem:
        result = replace(result, advice=advice(result, cfg))
    if setup.process.main:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        result.figure().savefig(Path(cfg.out) / "lr_find.png")
    return result


def find_lr(cfg: Config) -> RangeTest:
    """train.py --find-lr, and a notebook's call: the range test alone, its line printed and its plot
    written to RUN/lr_find.png; the result's figure() draws it again. A test too short to read is
    refused before anything runs, as --find-lr's is."""
    cfg = resolve(replace(cfg, find_lr=True))
    process = distributed.start(cfg.device)
    refuse_ranks(process)
    with claim(cfg, process, new_run=False):
        result = search(prepare(cfg, process))
        print(f"{result.line()} (plot: {cfg.out}/lr_find.png)", flush=True)
    return result


def usable_lr(setup: Setup) -> float:
    """--lr auto: the range test's suggestion, or a UsageError saying why it has none and what to do."""
    refuse_ranks(setup.process)
    result = search(setup)
    if result.problem:
        raise UsageError(f"{cli.spelled('lr', 'auto')}: the LR range test gives no usable LR: {result.problem}: "
                         f"{result.advice} (plot: {setup.cfg.out}/lr_find.png)")
    if setup.process.main:
        print(f"{result.line()} (plot: {setup.cfg.out}/lr_find.png)", flush=True)
    return result.suggestion


def refuse_ranks(process):
    if process.world > 1:
        raise UsageError("run the LR range test on one process, then pass its --lr to torchrun")
