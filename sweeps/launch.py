"""--workers N: N worker processes on this machine taking trials from the same study. With GPUs, one
per GPU (CUDA_VISIBLE_DEVICES pins it: each run sees its GPU as cuda:0); the CPU cores are split
between them (OMP_NUM_THREADS). Each is `python -m sweeps JOB`, the job (plan, storage) as JSON."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from common.cli import Stopped, UsageError

ROOT = Path(__file__).resolve().parents[1]


def gpus(device: str) -> list:
    """The GPUs trials may use: those CUDA_VISIBLE_DEVICES lists, else all; none for --device cpu."""
    if device == "cpu" or not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]


def environments(n: int, device: str) -> list:
    """(label, environment) of each worker."""
    cards = gpus(device)
    if cards and n > len(cards):
        raise UsageError(f"--workers {n}: {len(cards)} GPU(s) visible and a worker takes one: use --workers "
                         f"{len(cards)} or fewer (or --device cpu after --)")
    threads = max(1, len(os.sched_getaffinity(0)) // n)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    workers = []
    for i in range(n):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": path}
        if cards:
            env["CUDA_VISIBLE_DEVICES"] = cards[i]
        workers.append((f"[gpu {cards[i]}] " if cards else f"[worker {i}] ", env))
    return workers


def run_workers(job: dict, workers: list) -> list:
    """Start the workers ((label, environment) each) and wait for all; their exit codes. Ctrl-C reaches
    each from the terminal (one process group) and each saves its trial's step; a SIGTERM to this
    process is passed on to them."""
    procs = [subprocess.Popen([sys.executable, "-m", "sweeps", json.dumps({**job, "label": label})], env=env)
             for label, env in workers]

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    stopped = [c for c in codes if c in (128 + signal.SIGINT, 128 + signal.SIGTERM)]
    if stopped:
        raise Stopped("sweep stopped: run the same command again to go on (each trial resumes from its "
                      "last.pt)", stopped[0] - 128)
    return codes
