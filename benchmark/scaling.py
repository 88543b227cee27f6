"""How each loader's cost grows (--scaling): images/s of the loader alone against the batch size (at the
default threads) and against its threads (at the run's batch size). Threads are DALI's num_threads,
the DataLoader's worker processes, and torch's intra-op threads for the torch-ops loader."""
import gc
import os
from contextlib import nullcontext

from .loaders import NAMES
from .measure import torch_threads


def thread_counts() -> list:
    """1, 2 and all cores (once each)."""
    return sorted({1, 2, os.cpu_count() or 1})


def sweep(build, measure, *, batch_sizes, batch_size: int, images: int) -> dict:
    """{"batch_size": {loader: {size: figures}}, "threads": {loader: {count: figures}}}. build(name,
    batch_size, threads) makes a loader (threads None: the run's own); measure(stage, loader) times
    it alone as the pipeline stages are timed. Batch sizes above the number of images are left out."""
    out = {"batch_size": {}, "threads": {}}
    for name in NAMES:
        out["batch_size"][name] = {
            size: point(measure, f"scaling {NAMES[name]} batch {size}", lambda: build(name, size, None))
            for size in batch_sizes if size <= images}
        out["threads"][name] = {
            count: point(measure, f"scaling {NAMES[name]} {count} threads",
                         lambda: build(name, batch_size, count),
                         torch_thread_count=count if name == "torch_ops" else None)
            for count in thread_counts()}
    return out


def point(measure, stage: str, make, torch_thread_count=None) -> dict:
    """One loader alone; it (and a DataLoader's workers) is gone before the next one is built."""
    with torch_threads(torch_thread_count) if torch_thread_count else nullcontext():
        figures = measure(stage, make())
    gc.collect()  # a DataLoader's workers exit with their iterator
    return figures
