"""Training, for train.py and for a notebook alike: `fit(Config(...))` trains a run and returns its
Result; `find_lr(Config(...))` runs the LR range test alone. Clients that train outside a run (bench.py)
use the same building blocks fit does: build_model, build_optimizer, precision, train_step.
Config loads without torch, so a script checks its options before the rest loads (on first use)."""
from common.lazy import on_first_use

from .config import RUNTIME, Config, resolve

__getattr__ = on_first_use(__name__, {
    ".loop": ("fit", "Result"), ".lr_finder": ("find_lr", "RangeTest"), ".rng": ("seed_everything",),
    ".build": ("Precision", "build_model", "build_optimizer", "precision"),
    ".step": ("train_step", "logits_of")})

__all__ = ["Config", "resolve", "RUNTIME", "fit", "Result", "find_lr", "RangeTest", "build_model",
           "build_optimizer", "precision", "Precision", "train_step", "logits_of", "seed_everything"]
