"""The stages: each loader alone (pipeline_*), the training step alone on a batch already on the device
(model_only, the ceiling), and the training step fed by each loader (e2e_*)."""
from typing import NamedTuple

import torch

from training.build import build_model, build_optimizer, precision
from training.step import train_step

from . import limits
from .loaders import NAMES
from .measure import forever, interleaved, passes, repeat_first, steps

LABELS = {**{f"pipeline_{k}": f"pipeline  {v}" for k, v in NAMES.items()},
          "model_only": "model only (train_step)",
          **{f"e2e_{k}": f"end-to-end  {v}" for k, v in NAMES.items()}}
PIPELINES = [f"pipeline_{k}" for k in NAMES]
FLOP_IMAGES = 8  # images of the first batch whose training step the FLOP counter watches
MODELS = ["model_only"] + [f"e2e_{k}" for k in NAMES]


class Trainer(NamedTuple):
    step: object        # (x, y) -> None: one training step, compiled when the config says so
    eager_step: object  # the same on the uncompiled model, for the FLOP counter


def trainer(cfg, device) -> Trainer:
    """training.step.train_step with the model, optimizer, autocast and scaler set up as training does."""
    model = build_model(cfg, 10, device)
    optimizer = build_optimizer(cfg, model, device)
    amp, scaler, _ = precision(cfg, device)
    compiled = torch.compile(model) if cfg.compile else model

    def on(net):
        return lambda x, y: train_step(net, optimizer, scaler, amp, x, y, cfg.label_smoothing)
    return Trainer(on(compiled), on(model))


def pipelines(loaders: dict, deadlines: dict, *, warmup: int, repeats: int, seconds: float, sync,
              progress) -> dict:
    """Each loader alone, interleaved. DALI's runs come right before the DataLoader's: at the end of an
    epoch DALI prefetches the next one's first batches, work that would land in the next stage's run."""
    runs = {f"pipeline_{k}": passes(loaders[k], seconds) for k in ("torch_ops", "dali", "dataloader")}
    return interleaved(runs, deadlines, warmup=warmup, repeats=repeats, sync=sync, progress=progress)


def models(loaders: dict, train: Trainer, deadlines: dict, *, warmup: int, repeats: int, steps_per_run: int,
           sync, progress) -> tuple:
    """(results, training FLOPs per image): the model alone and fed by each loader, interleaved, after
    `warmup` untimed steps they share (one model). FLOPs are counted on a few images of the batch, on
    the uncompiled model: a conv net's FLOPs grow linearly with the batch, and a small one is quick."""
    streams = {name: forever(loader) for name, loader in loaders.items()}  # each stream's first batch drawn
    alone = repeat_first(streams["dali"])
    x, y = next(alone)
    with deadlines["model_only"] as deadline:
        counted = limits.step_flops(train.eager_step, x[:FLOP_IMAGES], y[:FLOP_IMAGES])
        flops_per_image = counted / len(y[:FLOP_IMAGES])
        for _ in range(warmup):
            train.step(x, y)
            deadline.check()
        sync()
    progress("model_only", -1, repeats, None)
    runs = {"model_only": steps(train.step, alone, steps_per_run),
            **{f"e2e_{name}": steps(train.step, stream, steps_per_run) for name, stream in streams.items()}}
    results = interleaved(runs, deadlines, warmup=0, repeats=repeats, sync=sync, progress=progress)
    return results, flops_per_image
