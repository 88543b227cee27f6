"""Timing: images/s of repeated runs (median, min, max), the stages of a group interleaved round by
round; every stage on a deadline, so none can wait for ever."""
import itertools
import os
import statistics
import threading
import time
from contextlib import contextmanager

import torch

from . import machine, verdict

GRACE = 30.0  # seconds a single call may run past its stage's deadline before the watchdog steps in


class StageOverrun(Exception):
    """A stage passed its deadline; the message names it."""

    def __init__(self, stage: str, limit: float, how: str = ""):
        super().__init__(f"stage '{stage}' passed its deadline of {limit:g} s{how} "
                         "(raise it with --stage-timeout, or look for what hangs)")
        self.stage = stage


class Deadline:
    """The time one stage has spent, against its limit. check() (called between batches and steps) raises
    StageOverrun once it is past; a watchdog thread calls on_stuck(stage, message) when one call runs
    GRACE seconds past it: a hang inside C code, which no check would ever reach."""

    def __init__(self, stage: str, limit: float, on_stuck):
        self.stage, self.limit, self.on_stuck = stage, limit, on_stuck
        self.spent, self.started, self.watchdog = 0.0, 0.0, None

    def __enter__(self):
        self.started = time.monotonic()
        message = str(StageOverrun(self.stage, self.limit, f", stuck for {GRACE:g} s more in one call"))
        self.watchdog = threading.Timer(self.limit - self.spent + GRACE, self.on_stuck, (self.stage, message))
        self.watchdog.daemon = True
        self.watchdog.start()
        return self

    def __exit__(self, kind, error, trace):
        self.watchdog.cancel()
        self.spent += time.monotonic() - self.started
        if isinstance(error, Exception) and not isinstance(error, StageOverrun) and self.spent > self.limit:
            raise StageOverrun(self.stage, self.limit) from error  # e.g. the DataLoader's own timeout

    def check(self):
        if self.spent + time.monotonic() - self.started > self.limit:
            raise StageOverrun(self.stage, self.limit)


def interleaved(runs: dict, deadlines: dict, *, warmup: int, repeats: int, sync, progress) -> dict:
    """{stage: figures}: each run(check) (which returns how many images it processed) `warmup` times
    untimed, then `repeats` times timed, one stage after the other in every round, so that a busy
    spell on a shared machine falls on all stages alike. cpu_per_wall is the CPU seconds per second of
    this process and its children (a DataLoader's workers do its work); others_cores, the cores' worth other
    processes used during the timed runs (machine.py), and the load average before and after them say
    whether the machine was free; `unreliable` lists what makes the figure doubtful (verdict.py)."""
    tallies = {k: Tally() for k in runs}
    for round_ in range(warmup + repeats):
        for stage, run in runs.items():
            timed = round_ >= warmup
            before = tallies[stage].start() if timed else None
            with deadlines[stage] as deadline:
                t0, c0 = time.perf_counter(), machine.own_cpu()
                n = run(deadline.check)
                sync()
                seconds = time.perf_counter() - t0
            progress(stage, round_ - warmup, repeats, n / seconds)
            if timed:
                tallies[stage].add(before, n, seconds, machine.own_cpu() - c0)
    return {k: t.figures() for k, t in tallies.items()}


class Tally:
    """One stage's timed runs: images/s, CPU time, and the machine's load around each run."""

    def __init__(self):
        self.rates, self.images, self.others, self.load_average = [], [], [], []
        self.wall = self.cpu = self.others_cpu = self.watched = 0.0

    def start(self) -> machine.Sample:
        if not self.load_average:
            self.load_average.append(os.getloadavg()[0])
        return machine.sample()

    def add(self, before: machine.Sample, n: int, seconds: float, cpu: float):
        after = machine.sample()
        others = machine.others_cores(before, after)
        window = after.wall - before.wall
        self.rates.append(n / seconds)
        self.images.append(n)
        self.wall, self.cpu = self.wall + seconds, self.cpu + cpu
        self.others.append(others if others is not None and window >= machine.MIN_WINDOW else None)
        if others is not None:
            self.others_cpu, self.watched = self.others_cpu + others * window, self.watched + window
        self.load_average[1:] = [os.getloadavg()[0]]

    def figures(self) -> dict:
        r = self.rates
        out = dict(median=statistics.median(r), min=min(r), max=max(r), runs=r, images_per_run=self.images,
                   cpu_per_wall=self.cpu / self.wall,
                   others_cores=self.others_cpu / self.watched if self.watched >= machine.MIN_WINDOW else None,
                   others_cores_runs=self.others, load_average=self.load_average)
        out["unreliable"] = verdict.reasons(out)
        return out


def passes(loader, seconds: float):
    """A pipeline stage's run: whole epochs of the loader until `seconds` have passed (at least one: a
    run of a few ms measures the timer and the scheduler more than the loader). The batches exist on
    the device; the caller's sync waits for the last."""
    def run(check):
        count, start = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - start < seconds:
            for _, y in loader:
                count += len(y)
                check()
        return count
    return run


def steps(step, batches, n: int):
    """A model stage's run: n training steps on the next n batches."""
    def run(check):
        count = 0
        for x, y in itertools.islice(batches, n):
            step(x, y)
            count += len(y)
            check()
        return count
    return run


def forever(loader):
    """Batches across as many epochs as asked for, each pass over the loader a new epoch, the first one
    drawn now (so a loader's start-up is not timed). A loader, not a generator: an exhausted one would
    make this spin for ever."""
    batches = (batch for _ in itertools.count() for batch in loader)
    return itertools.chain([next(batches)], batches)


def repeat_first(batches):
    """The model alone: one batch already on the device, again and again (a copy, owned here)."""
    return itertools.repeat(tuple(t.clone() for t in next(batches)))


@contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to n for a while (the torch-ops loader's thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
