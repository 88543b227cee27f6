"""The stages: each loader alone (pipeline_*), the training step alone on a batch already on the device
(model_only, the ceiling), and the training step fed by each loader (e2e_*)."""
import time
from typing import NamedTuple

import torch

from training import build_model, build_optimizer, precision, train_step

from . import limits
from .loaders import NAMES
from .measure import forever, interleaved, passes, repeat_first, steps

LABELS = {**{f"pipeline_{k}": f"pipeline  {v}" for k, v in NAMES.items()},
          "model_only": "model only (train_step)",
          **{f"e2e_{k}": f"end-to-end  {v}" for k, v in NAMES.items()}}
PIPELINES = [f"pipeline_{k}" for k in NAMES]
FLOP_IMAGES = 8  # images of the first batch whose training step the FLOP counter watches
MODELS = ["model_only"] + [f"e2e_{k}" for k in NAMES]
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs
PROBE_BATCH = 32  # images of the step that measures a CPU's speed before the batch is chosen


class Rounds(NamedTuple):
    """How the model stages are timed: untimed steps they share, then rounds of steps per stage."""
    warmup: int
    repeats: int
    steps: int


class Trainer(NamedTuple):
    step: object        # (x, y) -> None: one training step, compiled when the config says so
    eager_step: object  # the same on the uncompiled model, for the FLOP counter


def trainer(cfg, device, mode: str | None = None) -> Trainer:
    """training.step.train_step with the model, optimizer, autocast and scaler set up as training does;
    compiled in torch.compile's `mode` (None: eager, or the default mode when the config compiles)."""
    model = build_model(cfg, 10, device)
    optimizer = build_optimizer(cfg, model, device)
    amp, scaler, _ = precision(cfg, device)
    mode = mode or ("default" if cfg.compile else None)
    compiled = torch.compile(model, mode=mode) if mode else model
    graphs = mode in CUDA_GRAPH_MODES and device.type == "cuda"

    def on(net, mark: bool):
        def step(x, y):
            if mark:  # a new step: the CUDA graphs may overwrite the last step's outputs (none is kept)
                torch.compiler.cudagraph_mark_step_begin()
            train_step(net, optimizer, scaler, amp, x, y, cfg.label_smoothing)
        return step
    return Trainer(on(compiled, graphs), on(model, False))


def pipelines(loaders: dict, deadlines: dict, *, warmup: int, repeats: int, seconds: float, sync,
              progress) -> dict:
    """Each loader alone, interleaved. DALI's runs come right before the DataLoader's: at the end of an
    epoch DALI prefetches the next one's first batches, work that would land in the next stage's run."""
    runs = {f"pipeline_{k}": passes(loaders[k], seconds) for k in ("torch_ops", "dali", "dataloader")}
    return interleaved(runs, deadlines, warmup=warmup, repeats=repeats, sync=sync, progress=progress)


def models(loaders: dict, train: Trainer, deadlines: dict, rounds: Rounds, sync, progress) -> tuple:
    """(results, training FLOPs per image, the model-alone batch): the model alone and fed by each
    loader, interleaved, after rounds.warmup untimed steps they share (one model). FLOPs are counted
    on a few images of the batch, on the uncompiled model: a conv net's FLOPs grow linearly with the
    batch, and a small one is quick."""
    streams = {name: forever(loader) for name, loader in loaders.items()}  # each stream's first batch drawn
    alone = repeat_first(streams["dali"])
    x, y = next(alone)
    with deadlines["model_only"] as deadline:
        counted = limits.step_flops(train.eager_step, x[:FLOP_IMAGES], y[:FLOP_IMAGES])
        flops_per_image = counted / len(y[:FLOP_IMAGES])
        for _ in range(rounds.warmup):
            train.step(x, y)
            deadline.check()
        sync()
    progress("model_only", -1, rounds.repeats, None)
    runs = {"model_only": steps(train.step, alone, rounds.steps),
            **{f"e2e_{name}": steps(train.step, stream, rounds.steps) for name, stream in streams.items()}}
    results = interleaved(runs, deadlines, warmup=0, repeats=rounds.repeats, sync=sync, progress=progress)
    return results, flops_per_image, (x, y)


def probe(cfg, device) -> float:
    """Training images/s of one step on PROBE_BATCH random images, after one untimed step: enough to
    size the CPU's model stages (the first step pays for allocations and kernel choice)."""
    step = trainer(cfg, device).step
    x = torch.rand(PROBE_BATCH, 3, 32, 32, device=device, dtype=precision(cfg, device).loader_dtype)
    x = x.contiguous(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    y = torch.randint(0, 10, (PROBE_BATCH,), device=device)
    step(x, y)
    started = time.perf_counter()
    step(x, y)
    return PROBE_BATCH / (time.perf_counter() - started)
