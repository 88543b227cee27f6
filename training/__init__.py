"""Training, for train.py and for a notebook alike: `fit(Config(...))` trains a run and returns its
Result; `find_lr(Config(...))` runs the LR range test alone. Inside: the config, building
model/optimizer/schedule, the training step, evaluation, the LR range test, the run log, the loop."""
from .build import Precision, build_model, build_optimizer, precision
from .config import Config, resolve
from .loop import Result, fit
from .lr_finder import RangeTest, find_lr
from .rng import seed_everything
from .step import train_step

__all__ = ["Config", "resolve", "fit", "Result", "find_lr", "RangeTest", "build_model", "build_optimizer",
           "precision", "Precision", "train_step", "seed_everything"]
