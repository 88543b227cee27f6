"""The training step's fast paths side by side (--fast-paths; on by default on a GPU): eager against
torch.compile in its default mode (what train.py --compile does) and with CUDA graphs (mode
"reduce-overhead"), bf16 against fp16 (with the gradient scaler, as training does); "max-autotune" when
asked for by name (its kernel search takes minutes). Each variant trains on the same batch already on
the device (the model alone), in its own precision's input dtype. The variants are built and warmed up
one at a time, so each one's warm-up time (compiling included) and its peak GPU memory above what was
resident before it (weights, optimizer state, activations, CUDA-graph pools, compile workspace) are
its own; then their timed runs take turns round by round, as every other group of stages does."""
import argparse
import gc
import itertools
import time

import torch

from training import config
from training.build import precision as precision_of

from .measure import interleaved, steps
from .stages import trainer

PRECISIONS = ("bf16", "fp16", "fp32")
MODES = ("eager", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DEFAULT = ("bf16:eager", "fp16:eager", "bf16:default", "bf16:reduce-overhead")
GRAPHS_WARMUP = 3  # steps on a GPU: both passes compile on the first, CUDA graphs are recorded on a later one


def variant(text: str) -> str:
    """PRECISION:MODE, checked (the option's type)."""
    precision, _, mode = text.partition(":")
    if precision not in PRECISIONS or mode not in MODES:
        raise argparse.ArgumentTypeError(f"expected PRECISION:MODE, PRECISION one of {', '.join(PRECISIONS)} "
                                         f"and MODE one of {', '.join(MODES)}; got {text!r}")
    return text


def stage(name: str) -> str:
    return "step_" + name.replace(":", "_")


def label(name: str) -> str:
    precision, mode = name.split(":")
    return f"step {precision}, " + ("eager" if mode == "eager" else f"compile {mode}")


def measure(variants, base: dict, device, batch, deadline, *, warmup: int, repeats: int, steps_per_run: int,
            sync, progress, save) -> dict:
    """{variant: figures, with precision, mode, warmup_seconds and gpu_peak_mb}. base: the run's options
    for training.config.build; batch: (x, y) on the device; deadline(stage) makes a stage's Deadline;
    save(found) is called after each warm-up, so a run cut short keeps the variants done so far."""
    deadlines = {stage(n): deadline(stage(n)) for n in variants}
    built, found = {}, {}
    for name in variants:
        with deadlines[stage(name)] as d:
            built[name], found[name] = warmed_up(name, base, device, batch, warmup, sync, d.check)
        progress(stage(name), -1, repeats, None)
        save(found)
    runs = {stage(n): steps(step, itertools.repeat(inputs), steps_per_run) for n, (step, inputs) in built.items()}
    timed = interleaved(runs, deadlines, warmup=0, repeats=repeats, sync=sync, progress=progress)
    return {n: {**found[n], **timed[stage(n)]} for n in variants}


def warmed_up(name: str, base: dict, device, batch, warmup: int, sync, check) -> tuple:
    """((step, its inputs), figures of the build and warm-up) for one variant."""
    precision, mode = name.split(":")
    cfg = config.build({**base, "precision": precision, "compile": mode != "eager"})
    gpu = device.type == "cuda"
    gc.collect()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() if gpu else 0
    started = time.perf_counter()
    step = trainer(cfg, device, None if mode == "eager" else mode).step
    x, y = batch[0].to(precision_of(cfg, device).loader_dtype), batch[1]
    for _ in range(max(warmup, GRAPHS_WARMUP if gpu and mode != "eager" else 1)):
        step(x, y)
        check()
    sync()
    return (step, (x, y)), dict(
        precision=precision, mode=mode, warmup_seconds=time.perf_counter() - started,
        gpu_peak_mb=(torch.cuda.max_memory_allocated() - resident) / 2**20 if gpu else None)
