"""sweep.py's own options (declared once, as train.py's are) and the split of its command line: what
comes before `--` is the sweep's, what comes after is train.py's, fixed for every trial."""
import textwrap
from dataclasses import dataclass

from common.cli import UsageError, option

from .plan import OWNED, flag, flags


@dataclass(frozen=True)
class Options:
    name: str = option("", "the sweep's name: its directory (runs/sweeps/NAME) and its study (required)")
    grid: tuple = option((), "one of train.py's options and its values, e.g. lr=0.05,0.1,0.2; repeat it to sweep "
                            "more (the product is swept; the last one is the plot's x axis). By default none: "
                            "the options after -- alone", action="append", type=str, metavar="OPTION=V1,V2")
    seeds: int = option(3, "seeds per setting: 0, 1, ..., N-1")
    workers: int = option(1, "trials at once on this machine: one per GPU (pinned with CUDA_VISIBLE_DEVICES), "
                             "or on a CPU N processes with the cores split between them")
    storage: str = option("", "database URL that many machines share, e.g. postgresql://USER:PASS@HOST/DB; "
                              "each machine runs the same command (default: an SQLite file in the sweep directory)")
    out: str = option("", "the sweep's directory (default runs/sweeps/NAME)")
    heartbeat: int = option(60, "seconds between a running trial's heartbeats: a trial silent for two is taken "
                                "as dead and queued again (its next attempt resumes from its last.pt)")

    def __post_init__(self):
        problems = [(not self.name, "--name is required: it names the sweep's directory and its study"),
                    (self.workers < 1, f"--workers must be >= 1 (got {self.workers})"),
                    (self.heartbeat < 1, f"--heartbeat must be >= 1 second (got {self.heartbeat})")]
        for bad, message in problems:
            if bad:
                raise UsageError(message)


def split_argv(argv: list) -> tuple:
    """(the sweep's arguments, train.py's): split at the first --."""
    if "--" not in argv:
        return list(argv), []
    i = argv.index("--")
    return list(argv[:i]), list(argv[i + 1:])


def described(doc: str) -> str:
    """sweep.py's help text: its docstring and the train.py options a sweep may fix or sweep."""
    names = " ".join(f"--{flag(name)}" for name in flags() if name not in OWNED)
    return doc + "\n" + textwrap.fill(f"train.py's options (fixed after --, or swept with --grid NAME=...): {names}",
                                      width=100, break_on_hyphens=False)
