"""The run's configuration: one dataclass, from which the command line is built (each option declared
once), checked once, stored in every checkpoint and read back by --resume and viz.py."""
import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch

import nets
import pipeline
from common import device as devices
from common import cli
from common.cli import UsageError, option

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
OPTIMIZERS = ("sgd", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULERS = ("onecycle", "plateau", "none")
DEFAULT_LR = {"sgd": 0.2, "nesterov": 0.2, "rmsprop": 1e-3, "adam": 2e-3, "adamw": 2e-3}  # at batch 512
LR_BATCH = 512  # DEFAULT_LR's batch: without --lr the LR follows the global batch linearly (Goyal et al.)


def lr_value(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


@dataclass
class Config:
    model: str = option("resnet18", "network", choices=sorted(nets.MODELS))
    data: str = option("cifar10", "cifar10, or imagefolder: DATA_DIR/{train,test}/<class>/*.jpg|png",
                       choices=pipeline.KINDS)
    data_dir: str = option("data", "dataset folder")
    image_size: int = option(0, "imagefolder: resize to this size (default: the images' own)")
    out: str = option("runs/resnet18", "run directory")
    epochs: int = option(20, "epochs")
    batch_size: int = option(512, "images per step per process (per GPU)")
    optimizer: str = option("nesterov", "optimizer", choices=OPTIMIZERS)
    lr: float = option(0.0, "max LR (OneCycle) or LR; 'auto' = range test first (default: the optimizer's "
                            "at batch 512, " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) +
                            ", times global batch / 512)", type=lr_value)
    lr_auto: bool = option(False)  # set by --lr auto: run the range test first and use its suggestion
    momentum: float = option(0.9, "sgd/nesterov/rmsprop momentum; 0 = plain SGD")
    weight_decay: float = option(5e-4, "weight decay")
    # The recipe's defaults are what measured best (BENCHMARKS.md: real images, a small CPU budget).
    norm_bias_decay: bool = option(True, "weight decay on BatchNorm weights and on biases too")
    zero_init_residual: bool = option(False, "each residual block's last BatchNorm scale starts at 0")
    label_smoothing: float = option(0.0, "label smoothing")
    ema: float = option(0.99, "decay of an exponential moving average of the weights, updated every "
                              "step, evaluated and saved beside them; 0 = none")
    tta: bool = option(True, "evaluate each image and its mirror image, averaging the logits")
    grad_noise: float = option(0.0, "annealed Gaussian gradient noise eta: variance eta / (1 + step)^0.55 "
                                    "(Neelakantan et al. 2015); 0 = none")
    scheduler: str = option("onecycle", "LR schedule", choices=SCHEDULERS)
    plateau_patience: int = option(2, "plateau: epochs without improvement")
    plateau_factor: float = option(0.2, "plateau: LR multiplier")
    plateau_threshold: float = option(1e-3, "plateau: least improvement that counts")
    plateau_threshold_mode: str = option("rel", "plateau: threshold relative or absolute",
                                         choices=("rel", "abs"))
    batch_ramp: bool = option(False, "plateau: grow the batch by 1/--plateau-factor where the LR would "
                                     "be cut (Smith et al. 2017), up to --max-batch-size")
    max_batch_size: int = option(0, "largest batch --batch-ramp grows to (default: 8 x --batch-size)")
    val_split: float = option(0.0, "hold out this fraction of train, chosen by the seed: best.pt and "
                                   "--scheduler plateau use it, never the test set")
    precision: str = option("auto", "autocast dtype, fp16 with a gradient scaler; auto: bf16 on a GPU "
                                    "or a CPU with native bf16, else fp32", choices=PRECISIONS)
    channels_last: bool = option(True, "NHWC memory layout")
    compile: bool = option(False, "torch.compile the model")
    seed: int = option(0, "seed of the data order, augmentation and weights")
    device: str = option("auto", "where to train", choices=devices.CHOICES)
    limit_train: int = option(0, "train on the first N images (smoke runs)")
    limit_test: int = option(0, "evaluate the first N test images")
    find_lr: bool = option(False, "LR range test only: plot and suggestion, then exit")
    find_lr_steps: int = option(200, "steps of the range test")
    resume: str = option("", "checkpoint to continue from (its config is used)")

    def check(self):
        problems = [
            (self.epochs <= 0, f"--epochs must be > 0 (got {self.epochs})"),
            (self.batch_size <= 0, f"--batch-size must be > 0 (got {self.batch_size})"),
            (self.lr < 0, f"--lr must be > 0 or 'auto' (got {self.lr})"),
            (not 0 <= self.val_split < 1, f"--val-split must be in [0, 1) (got {self.val_split})"),
            (self.momentum < 0, f"--momentum must be >= 0 (got {self.momentum})"),
            (self.optimizer == "nesterov" and self.momentum == 0, "--optimizer nesterov needs --momentum > 0"),
            (self.weight_decay < 0, f"--weight-decay must be >= 0 (got {self.weight_decay})"),
            (min(self.limit_train, self.limit_test) < 0, "--limit-train/--limit-test must be >= 0"),
            (not 0 < self.plateau_factor < 1, "--plateau-factor must be in (0, 1)"),
            (self.find_lr_steps < 10, "--find-lr-steps must be >= 10"),
            (not 0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1) (got {self.label_smoothing})"),
            (not 0 <= self.ema < 1, f"--ema is a decay in [0, 1) (got {self.ema})"),
            (self.grad_noise < 0, f"--grad-noise must be >= 0 (got {self.grad_noise})"),
            (self.scheduler == "plateau" and not self.val_split, "--scheduler plateau steps on a validation "
             "loss, never the test set's: add --val-split (e.g. 0.1)"),
            (self.batch_ramp and self.scheduler != "plateau", "--batch-ramp replaces the LR cuts of "
             "--scheduler plateau: add it (with --val-split)"),
            (self.max_batch_size < 0, f"--max-batch-size must be >= 0 (got {self.max_batch_size})"),
        ]
        for bad, message in problems:
            if bad:
                raise UsageError(message)


# Options that may differ when resuming: where and how to run, not what is trained.
RUNTIME = {"resume", "device", "data_dir", "out", "compile"}


def parse(argv, description: str = "") -> dict:
    """Only the options given on the command line (the rest come from Config or the checkpoint)."""
    given = cli.parse(Config, argv, description)
    if given.get("lr") == "auto":
        given.update(lr=0.0, lr_auto=True)
    return given


def build(given: dict, resumed: dict | None = None) -> Config:
    """The run's Config: the defaults and the given options, or the checkpoint's config and the given
    runtime options (another value for anything else is refused)."""
    if resumed is None:
        cfg = Config(**given)
    else:
        stored = resumed["config"]
        clash = [k for k, v in given.items() if k not in RUNTIME and stored.get(k) != v]
        if clash:
            k = clash[0]
            raise UsageError(f"--{k.replace('_', '-')} {given[k]} differs from the checkpoint's "
                             f"{stored.get(k)}: drop the flag to resume, or start a new run with another --out")
        cfg = Config(**{**stored, "out": str(Path(given["resume"]).parent), **given})
    cfg.check()
    world = int(os.environ.get("WORLD_SIZE", 1))  # torchrun's process count; the config is built per rank
    cfg.lr = cfg.lr or DEFAULT_LR[cfg.optimizer] * cfg.batch_size * world / LR_BATCH
    cfg.max_batch_size = cfg.max_batch_size or 8 * cfg.batch_size
    cfg.precision = resolved_precision(cfg.precision, cfg.device)
    return cfg


def resolved_precision(precision: str, device_name: str) -> str:
    """auto: bf16 where it is fast (any CUDA GPU this code targets, a CPU with native bf16), else fp32."""
    if precision != "auto":
        return precision
    on_gpu = device_name != "cpu" and torch.cuda.is_available()
    return "bf16" if on_gpu or devices.cpu_has_native_bf16() else "fp32"
