"""Sweeps of train.py's options x seeds on Optuna, for sweep.py: the plan (grid, seeds, fixed options,
each point's run directory), the study (SQLite or a shared database, heartbeats), one trial (fit in its
run directory, resumed after a crash), the worker loop, --workers processes, the summary and its plot,
TensorBoard HParams. The options load without Optuna, torch or DALI; the rest on first use."""
from common.lazy import on_first_use

from .options import Options, described, split_argv

__getattr__ = on_first_use(__name__, {".driver": ("run",), ".plan": ("Plan",)})

__all__ = ["run", "Options", "described", "split_argv", "Plan"]
