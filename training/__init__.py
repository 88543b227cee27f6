"""Training, for train.py and for a notebook alike: `fit(Config(...))` trains a run and returns its
Result; `find_lr(Config(...))` runs the LR range test alone. Inside: the config, building
model/optimizer/schedule, the training step, evaluation, the LR range test, the run log, the loop."""
from .config import Config
from .loop import Result, fit
from .lr_finder import RangeTest, find_lr

__all__ = ["Config", "fit", "Result", "find_lr", "RangeTest"]
