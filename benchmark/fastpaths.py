"""The training step's fast paths side by side (--fast-paths; on by default on a GPU): eager against
torch.compile in its default mode (what train.py --compile does) and with CUDA graphs (mode
"reduce-overhead"), bf16 against fp16 (with the gradient scaler, as training does); "max-autotune" when
asked for by name (its kernel search takes minutes). Each variant trains on the same batch already on
the device (the model alone), in its own precision's input dtype. Unlike the other groups of stages,
the variants are measured one after the other, each built, warmed up, timed and freed before the
next: its warm-up time (compiling included) and its peak GPU memory above what was resident before it
(weights, optimizer state, activations, CUDA-graph pools, compile workspace) are its own, and a run
cut short (a compile can take a minute) keeps every variant finished. The load sampler still marks a
variant that other processes disturbed."""
import argparse
import gc
import itertools
import time

import torch

from common import device as devices
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


def runnable(variants, device) -> tuple:
    """(the variants this machine can run, {variant: why not}): a compiled one needs what
    common.device.compile_problem looks for (a C or C++ compiler, Python.h); a precision this CPU
    only emulates would take minutes a step and say nothing about a machine that has it."""
    problem = devices.compile_problem(device.type)
    skipped = {}
    for v in variants:
        why = devices.emulated_bf16(v.split(":")[0], device) or (problem if not v.endswith(":eager") else None)
        if why:
            skipped[v] = why
    return [v for v in variants if v not in skipped], skipped


def stage(name: str) -> str:
    return "step_" + name.replace(":", "_")


def label(name: str) -> str:
    precision, mode = name.split(":")
    return f"step {precision}, " + ("eager" if mode == "eager" else f"compile {mode}")


def measure(variants, base: dict, device, batch, deadline, *, warmup: int, repeats: int, steps_per_run: int,
            sync, progress, save) -> dict:
    """{variant: figures, with precision, mode, warmup_seconds and gpu_peak_mb}. base: the run's options
    for training.config.build; batch: (x, y) on the device; deadline(stage) makes a stage's Deadline;
    save(found) is called after each variant, so a run cut short keeps the variants done so far."""
    found = {}
    for name in variants:
        found[name] = one(name, base, device, batch, deadline(stage(name)), warmup=warmup, repeats=repeats,
                          steps_per_run=steps_per_run, sync=sync, progress=progress)
        save(found)
    return found


def one(name: str, base: dict, device, batch, deadline, *, warmup: int, repeats: int, steps_per_run: int,
        sync, progress) -> dict:
    """Build, warm up and time one variant; its memory is freed when it returns."""
    precision, mode = name.split(":")
    cfg = config.build({**base, "precision": precision, "compile": mode != "eager"})
    gpu = device.type == "cuda"
    if mode != "eager":
        torch.compiler.reset()  # compiled from scratch, as a run would be, not from another mode's graphs
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() if gpu else 0
    with deadline:
        started = time.perf_counter()
        step = trainer(cfg, device, None if mode == "eager" else mode).step
        x, y = batch[0].to(precision_of(cfg, device).loader_dtype), batch[1]
        for _ in range(max(warmup, GRAPHS_WARMUP if gpu and mode != "eager" else 1)):
            step(x, y)
            deadline.check()
        sync()
        warmed_up = time.perf_counter() - started
    progress(stage(name), -1, repeats, None)
    runs = {stage(name): steps(step, itertools.repeat((x, y)), steps_per_run)}
    timed = interleaved(runs, {stage(name): deadline}, warmup=0, repeats=repeats, sync=sync,
                        progress=progress)
    return dict(precision=precision, mode=mode, warmup_seconds=warmed_up,
                gpu_peak_mb=(torch.cuda.max_memory_allocated() - resident) / 2**20 if gpu else None,
                **timed[stage(name)])
