"""The training step's fast paths side by side (--fast-paths; on by default on a GPU): eager against
torch.compile in its default mode (what train.py --compile does) and with CUDA graphs (mode
"reduce-overhead": torch.compile graphs the model's forward and backward; the optimizer step, the
scaler and zero_grad stay eager), bf16 against fp16 (with the gradient scaler, as training does);
"max-autotune" when asked for by name (its kernel search takes minutes). Each variant trains on the
same batch already on the device (the model alone), in its own precision's input dtype. The variants
run most telling first (eager, then CUDA graphs, then the default compile), each built, warmed up,
timed and freed before the next: its warm-up time (compiling included, from an empty compile cache
of its own) and its peak GPU memory above what was resident before it are its own, and a run cut
short keeps every variant finished. The load sampler still marks a variant that other processes
disturbed."""
import gc
import itertools
import time
from dataclasses import replace

import torch

from common import device as devices
from training import precision, resolve

from .measure import interleaved, steps
from .stages import CUDA_GRAPH_MODES, trainer

GRAPHS_WARMUP = 3  # steps on a GPU: both passes compile on the first, CUDA graphs are recorded on a later one


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
    precision_, mode = name.split(":")
    graphs = " (CUDA graphs: forward + backward)" if mode in CUDA_GRAPH_MODES else ""
    return f"step {precision_}, " + ("eager" if mode == "eager" else f"compile {mode}{graphs}")


def measure(bench, variants, batch, saved) -> dict:
    """{variant: figures, with precision, mode, warmup_seconds and gpu_peak_mb}, measured in turn on
    bench (run.Bench: the run's options, device and deadlines); batch: (x, y) on the device;
    saved(found) is called after each variant, so a run cut short keeps the variants done so far."""
    found = {}
    for name in variants:
        found[name] = one(bench, name, batch)
        saved(found)
    return found


def one(bench, name: str, batch) -> dict:
    """Build, warm up and time one variant; its memory is freed when it returns."""
    from torch._inductor.utils import fresh_cache  # PyTorch's own tests' way to compile from nothing

    precision_, mode = name.split(":")
    cfg = resolve(replace(bench.cfg, precision=precision_, compile=mode != "eager"))
    device, gpu, c = bench.device, bench.device.type == "cuda", bench.record.doc["config"]
    if mode != "eager":
        torch.compiler.reset()  # compiled from scratch, as a run would be, not from another mode's graphs
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() if gpu else 0
    with fresh_cache():
        deadline = bench.deadline(stage(name))
        with deadline:
            started = time.perf_counter()
            step = trainer(cfg, device, None if mode == "eager" else mode).step
            x, y = batch[0].to(precision(cfg, device).loader_dtype), batch[1]
            for _ in range(max(bench.opts.warmup, GRAPHS_WARMUP if gpu and mode != "eager" else 1)):
                step(x, y)
                deadline.check()
            bench.sync()
            warmed_up = time.perf_counter() - started
        bench.progress(stage(name), -1, c["model_repeats"], None)
        runs = {stage(name): steps(step, itertools.repeat((x, y)), c["model_steps"])}
        timed = interleaved(runs, {stage(name): deadline}, warmup=0, repeats=c["model_repeats"], sync=bench.sync,
                            progress=bench.progress)
    return dict(precision=precision_, mode=mode, warmup_seconds=warmed_up,
                graphs="forward and backward; optimizer step eager" if gpu and mode in CUDA_GRAPH_MODES else None,
                gpu_peak_mb=(torch.cuda.max_memory_allocated() - resident) / 2**20 if gpu else None,
                **timed[stage(name)])
