"""How each loader's cost grows (--scaling): images/s of the loader alone against the batch size (at the
default threads) and against its threads (at the run's batch size). Threads are DALI's num_threads,
the DataLoader's worker processes, and torch's intra-op threads for the torch-ops loader."""
import gc
import os
from contextlib import nullcontext

from .loaders import NAMES
from .measure import interleaved, one_pass, torch_threads


def thread_counts() -> list:
    """1, 2 and all cores (once each)."""
    return sorted({1, 2, os.cpu_count() or 1})


def sweep(build, deadline, *, batch_sizes, batch_size: int, images: int, warmup: int, repeats: int,
          sync, progress) -> dict:
    """{"batch_size": {loader: {size: figures}}, "threads": {loader: {count: figures}}}. build(name,
    batch_size, threads) makes a loader (threads None: the run's own); deadline(stage) a Deadline.
    Batch sizes above the number of images are left out (no full batch)."""
    out = {"batch_size": {}, "threads": {}}
    for name in NAMES:
        out["batch_size"][name] = {
            size: point(build(name, size, None), f"scaling {NAMES[name]} batch {size}", deadline, None,
                        warmup, repeats, sync, progress)
            for size in batch_sizes if size <= images}
        out["threads"][name] = {
            count: point(build(name, batch_size, count), f"scaling {NAMES[name]} {count} threads", deadline,
                         count if name == "torch_ops" else None, warmup, repeats, sync, progress)
            for count in thread_counts()}
    return out


def point(loader, stage: str, deadline, torch_thread_count, warmup, repeats, sync, progress) -> dict:
    """One loader alone, measured as the pipeline stages are; the loader (and its workers) goes after."""
    with torch_threads(torch_thread_count) if torch_thread_count else nullcontext():
        figures = interleaved({stage: one_pass(loader)}, {stage: deadline(stage)}, warmup=warmup,
                              repeats=repeats, sync=sync, progress=progress)[stage]
    del loader
    gc.collect()  # a DataLoader's workers exit with their iterator
    return figures
