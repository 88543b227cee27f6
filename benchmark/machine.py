"""How busy the machine is apart from this benchmark, and how many threads it can have. Other processes'
CPU time over a window is the machine's busy time (/proc/stat, steal included: another VM on the same
cores) minus this process's and its children's (DataLoader workers, compile workers). It matters more
than a load average: one thread of a parallel region that finds no free core stalls the others (on 2
cores with one taken, the torch-ops loader at 2 threads fell twenty-fold: BENCHMARKS.md), so a
figure measured while others held cores is marked unreliable, and the thread count follows the cores
left free. Only the CPUs this process may run on count; where a CPU quota (cgroup) caps it below them,
other processes' use of shared CPUs says nothing about ours, and, as off Linux, the figures are None
and nothing is judged by them."""
import glob
import os
import resource
import time
from pathlib import Path
from typing import NamedTuple

LOAD_LIMIT = 0.25  # cores: other processes above this during a stage make its figure unreliable
START_WINDOW = 0.5  # seconds watched before choosing the thread count
MIN_WINDOW = 0.4  # seconds: shorter windows are too coarse to judge (/proc/stat counts 10 ms ticks)
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc's unit: ticks per second


# Where a cgroup caps CPU time: v2 "max 100000" (none) or "200000 100000"; v1 a quota (-1: none), a period.
CGROUP_QUOTAS = (("/sys/fs/cgroup/cpu.max",),
                 ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def cpu_quota() -> float | None:
    """The cores' worth of CPU time this process's cgroup may use; None: no cap (or none found)."""
    for files in CGROUP_QUOTAS:
        try:
            quota, period = " ".join(Path(f).read_text() for f in files).split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota in ("max", "-1") else int(quota) / int(period)
    return None


CPUS = sorted(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1))
QUOTA = cpu_quota()
CORES = max(1, min(len(CPUS), round(QUOTA))) if QUOTA else len(CPUS)  # what this process may use
SHARED = CORES < len(CPUS)  # a quota below the CPUs it runs on: others' use of them is not ours to judge


class Sample(NamedTuple):
    wall: float         # perf_counter seconds
    busy: float | None  # the machine's busy CPU seconds since boot, None without /proc/stat
    own: float          # CPU seconds of this process, its finished children and its live descendants


def sample() -> Sample:
    return Sample(time.perf_counter(), machine_busy(), own_cpu())


def machine_busy() -> float | None:
    """Busy CPU seconds of the CPUs this process may run on: user, nice, system, irq, softirq and steal
    (not idle or iowait)."""
    if SHARED:
        return None
    try:
        with open("/proc/stat") as f:
            rows = [line.split() for line in f if line.startswith("cpu") and line[3].isdigit()]
        busy = [sum(int(v) for i, v in enumerate(row[1:9]) if i not in (3, 4))  # 3, 4: idle, iowait
                for row in rows if int(row[0][3:]) in CPUS]
    except (OSError, ValueError):
        return None
    return sum(busy) / TICK if busy else None


def own_cpu() -> float:
    finished = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + finished.ru_utime + finished.ru_stime + sum(map(process_cpu,
                                                                                 descendants(os.getpid())))


def descendants(pid: int) -> list:
    """Every live process below pid (the children of each of its threads, and theirs)."""
    found = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                found += [int(child) for child in f.read().split()]
        except OSError:  # the thread ended meanwhile
            pass
    return found + [d for child in found for d in descendants(child)]


def process_cpu(pid: int) -> float:
    """utime + stime of a process, and of its reaped children, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / TICK  # fields 14-17 of proc(5): utime stime cutime cstime


def others_cores(before: Sample, after: Sample) -> float | None:
    """Cores' worth of CPU that other processes used between two samples (None: not known here)."""
    if before.busy is None or after.busy is None or after.wall <= before.wall:
        return None
    return max(0.0, (after.busy - before.busy) - (after.own - before.own)) / (after.wall - before.wall)


def free_cores(window: float = START_WINDOW) -> tuple:
    """(cores this process may use, other processes' cores) watched over `window` seconds while this
    process waits."""
    before = sample()
    time.sleep(window)
    return CORES, others_cores(before, sample())


def threads_for(cores: int, others: float | None) -> int:
    """Threads that each find a core: the cores less those other processes hold (a core counts as held
    once others use more than LOAD_LIMIT of it), at least 1."""
    return max(1, int(cores - (others or 0.0) + LOAD_LIMIT))
