"""Sweeps of train.py's options x seeds on Optuna, for sweep.py: the plan (grid, seeds, fixed options,
each point's run directory), the study (SQLite or a shared database, heartbeats), one trial (fit in its
run directory, resumed after a crash), the worker loop, --workers processes, the summary and its plot,
TensorBoard HParams."""
from .driver import run
from .options import Options, described, split_argv
from .plan import Plan

__all__ = ["run", "Options", "described", "split_argv", "Plan"]
