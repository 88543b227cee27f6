"""The one checkpoint format, written by train.py and read by train.py --resume and viz.py.

A checkpoint is a dict of tensors and plain Python values only, so `torch.load(weights_only=True)`
reads it and a file crafted to run code on unpickling is refused, not executed:
  format, version       "cifar-dali-checkpoint", 2
  model                 state_dict of the unwrapped model (no DDP `module.`, no compile `_orig_mod.`)
  ema                   state_dict of the weights' exponential moving average (None without --ema)
  optimizer, scheduler, scaler   their state_dicts (scheduler may be None)
  epoch, step           epochs completed; batches done in the next epoch (non-zero after an interrupt)
  partial               running sums of the interrupted epoch (None at an epoch boundary)
  rng                   python / numpy / torch generator states
  config                the training Config as a dict
  classes, mean, std    what the data was: names in label order, normalisation in [0, 1] units
  image_size            side of the square images the model was trained on
  history               one dict per finished epoch: epoch, lr, batch_size, train/val/test (and
                        ema_val/ema_test) loss/acc/count, img_s, seconds
  lr_steps              the LR of every training step so far
  batch_size            the current batch per process (grows under --batch-ramp)
  best_val_acc          best validation accuracy so far (None without --val-split)
"""
import pickle
from pathlib import Path

import torch

from common.cli import UserError
from common.files import atomic_write

FORMAT, VERSION = "cifar-dali-checkpoint", 2
REQUIRED = ("model", "ema", "optimizer", "epoch", "config", "classes", "mean", "std", "image_size",
            "history", "lr_steps", "batch_size")


class CheckpointError(UserError):
    """A path that is not a readable checkpoint of this project; the message says why."""


def save(path, state: dict):
    """Atomic: a crash leaves the previous checkpoint intact."""
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, "version": VERSION, **state}, f)


def load(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass the .pt file a training run "
                              "wrote (RUN_DIR/last.pt or RUN_DIR/best.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{path} is not a readable checkpoint (not a torch file): pass a file "
                                  "written by train.py") from None
        raise CheckpointError(f"{path} holds objects other than tensors and plain values, so it was not "
                              "loaded (loading it could run code): pass a file written by train.py") from None
    except Exception:  # truncated, or not a torch file at all
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, or not a torch file): "
                              "pass a file written by train.py") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this project (no '{FORMAT}' marker): "
                              "pass a file written by train.py")
    if state.get("version") != VERSION or any(k not in state for k in REQUIRED):
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')} or missing "
                              f"fields; this code reads version {VERSION}")
    return state
