"""The run's configuration: one dataclass, from which the command line is built (each option declared
once), checked once, stored in every checkpoint and read back by --resume and viz.py."""
import argparse
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import nets
import pipeline
from common import cli
from common import device as devices
from common.cli import UsageError, option

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
OPTIMIZERS = ("sgd", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULERS = ("onecycle", "plateau", "none")
DEFAULT_LR = {"sgd": 0.2, "nesterov": 0.2, "rmsprop": 1e-3, "adam": 2e-3, "adamw": 2e-3}  # at batch 512
LR_BATCH = 512  # DEFAULT_LR's batch: without --lr the LR follows the global batch linearly (Goyal et al.)
LR_TEST_MIN_STEPS = 100  # the range test's smoothing (beta 0.98) spans ~50 steps: fewer give a lagging curve
# The range test's one rule on its length, in --help and in the refusal (the test's other verdicts are
# about the curve it drew, lr_finder.verdict).
LR_TEST_RULE = (f"the LR range test needs {LR_TEST_MIN_STEPS} steps or more: its loss smoothing spans ~50 steps, "
                "so a shorter curve lags the LR it is read against")


def lr_value(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


@dataclass(frozen=True)
class Config:
    """A run's options: `Config(epochs=5)` in Python, flags on the command line; checked on
    construction (a bad value raises UsageError with the line the CLI prints), then never changed:
    resolved values (the LR, the precision, the run directory) come from resolve() as a new Config."""
    model: str = option("resnet18", "network", choices=sorted(nets.MODELS))
    data: str = option("cifar10", "cifar10, or imagefolder: DATA_DIR/{train,test}/<class>/*.jpg|png",
                       choices=pipeline.KINDS)
    data_dir: str = option("data", "dataset folder")
    image_size: int = option(0, "imagefolder: resize to this size (default: the images' own)")
    out: str = option("", "run directory (default runs/MODEL)")
    epochs: int = option(20, "epochs")
    batch_size: int = option(512, "images per step per process (per GPU)")
    optimizer: str = option("nesterov", "optimizer", choices=OPTIMIZERS)
    lr: float | str = option(0.0, "max LR (OneCycle) or LR; 'auto' = the LR range test's suggestion (default: "
                                  "the optimizer's at batch 512, " + ", ".join(f"{k} {v:g}" for k, v in
                                  DEFAULT_LR.items()) + ", times global batch / 512)", type=lr_value)
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
    val_split: float = option(0.0, "hold out this fraction of the training images, chosen by the seed: "
                                   "best.pt, --scheduler plateau and sweeps use it, never the test set")
    keep_best: bool = option(True, "with --val-split: also save best.pt, the epoch of best validation accuracy")
    precision: str = option("auto", "autocast dtype, fp16 with a gradient scaler; auto: bf16 on a GPU "
                                    "or a CPU with native bf16, else fp32", choices=PRECISIONS)
    channels_last: bool = option(True, "NHWC memory layout")
    compile: bool = option(False, "torch.compile the model (needs a C compiler and Python headers)")
    deterministic: bool = option(False, "deterministic GPU kernels (cuDNN without autotuning): a resumed GPU "
                                        "run then matches bit for bit, at some speed")
    loader: str = option("dali", "training batches from the DALI pipeline, or from whole-batch torch ops "
                                 "on the resident uint8 set (cifar10 only; see bench.py)", choices=pipeline.LOADERS)
    seed: int = option(0, "seed of the data order, augmentation and weights")
    device: str = option("auto", "where to train", choices=devices.CHOICES)
    limit_train: int = option(0, "use N of the training images (the validation split comes out of them), "
                                 "every class in its share, chosen by the seed (smoke runs)")
    limit_test: int = option(0, "evaluate N test images, every class in its share (the same N images in "
                                "every run and in viz.py)")
    skip_bad_images: bool = option(False, "imagefolder: train without the files that cannot be decoded "
                                          "(listed in RUN/bad_images.txt) instead of stopping")
    find_lr: bool = option(False, "LR range test only: plot and suggestion, then exit")
    find_lr_steps: int = option(200, f"steps of the range test ({LR_TEST_RULE})")
    resume: str = option("", "checkpoint to continue from (its config is used)")

    def __post_init__(self):
        cli.check_choices(self)
        self.check()

    def check(self):
        if self.lr != "auto" and not isinstance(self.lr, (int, float)):
            raise UsageError(f"--lr: expected a number or 'auto', got {self.lr!r}")
        problems = [
            (self.epochs <= 0, f"--epochs must be > 0 (got {self.epochs})"),
            (self.batch_size <= 0, f"--batch-size must be > 0 (got {self.batch_size})"),
            (self.lr != "auto" and self.lr < 0, f"--lr must be > 0 or 'auto' (got {self.lr})"),
            (not 0 <= self.val_split < 1, f"--val-split must be in [0, 1) (got {self.val_split})"),
            (self.momentum < 0, f"--momentum must be >= 0 (got {self.momentum})"),
            (self.optimizer == "nesterov" and self.momentum == 0, "--optimizer nesterov needs --momentum > 0"),
            (self.weight_decay < 0, f"--weight-decay must be >= 0 (got {self.weight_decay})"),
            (min(self.limit_train, self.limit_test) < 0, "--limit-train/--limit-test must be >= 0"),
            (not 0 < self.plateau_factor < 1, "--plateau-factor must be in (0, 1)"),
            ((self.find_lr or self.lr == "auto") and self.find_lr_steps < LR_TEST_MIN_STEPS, too_short(self)),
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
        pipeline.check_loader(self.data, self.loader)


def too_short(cfg: Config) -> str:
    """The refusal of a range test too short to read, before it runs. Checked only where the test runs
    (--find-lr, --lr auto, find_lr()): a config that merely carries a short one (a checkpoint's) trains."""
    instead = f", or train without the test: drop {cli.spelled('lr', 'auto')}" if cfg.lr == "auto" else ""
    return (f"{cli.spelled('find_lr_steps', cfg.find_lr_steps)}: {LR_TEST_RULE}: give "
            f"{cli.spelled('find_lr_steps', LR_TEST_MIN_STEPS)} or more{instead}")


# Options that may differ when resuming: where and how to run, not what is trained.
RUNTIME = {"resume", "device", "data_dir", "out", "compile", "deterministic"}


def resolved(given: dict) -> Config:
    """The resolved Config of the given options (the rest default)."""
    return resolve(Config(**given))


def resolve(cfg: Config) -> Config:
    """The values a run uses where an option's default depends on something else: the LR on the global
    batch ('auto' stays, for the range test), the run directory on the model, the precision on the
    device, the batch cap on the batch."""
    world = int(os.environ.get("WORLD_SIZE", 1))  # torchrun's process count; the config is built per rank
    return replace(cfg, lr=cfg.lr or DEFAULT_LR[cfg.optimizer] * cfg.batch_size * world / LR_BATCH,
                   out=cfg.out or f"runs/{cfg.model}", max_batch_size=cfg.max_batch_size or 8 * cfg.batch_size,
                   precision=resolved_precision(cfg.precision, cfg.device))


def continued(cfg: Config, resumed: dict) -> Config:
    """The config of a resumed run: the checkpoint's, with cfg's runtime options (and a new length where
    the schedule allows one). Any other option cfg sets away from its default must match the checkpoint."""
    names = {f.name: f.default for f in fields(Config)}
    stored = {k: v for k, v in resumed["config"].items() if k in names}  # older checkpoints: fewer keys
    given = {k: getattr(cfg, k) for k, default in names.items() if getattr(cfg, k) != default}
    for k, v in given.items():
        if k == "epochs":
            check_length(v, stored, resumed["epoch"])
        elif k not in RUNTIME and stored.get(k) != v:
            raise UsageError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {stored.get(k)}: drop "
                             "the flag to resume, or start a new run with another --out")
    kept = {k: v for k, v in given.items() if k in RUNTIME or k == "epochs"}
    return Config(**{**stored, "out": str(Path(cfg.resume).parent), **kept})


def check_length(epochs: int, stored: dict, done: int):
    """A resumed run may train longer (or stop sooner) unless OneCycle laid its LR out for its length."""
    if epochs == stored["epochs"]:
        return
    if stored["scheduler"] == "onecycle":
        raise UsageError(f"--epochs {epochs}: this run's OneCycle schedule was laid out for {stored['epochs']} "
                         "epochs (its LR anneals to ~0 at the end), so it cannot be stretched: start a new run "
                         f"with --epochs {epochs} and another --out (--scheduler none or plateau runs can be "
                         "extended)")
    if epochs < done:
        raise UsageError(f"--epochs {epochs}: the checkpoint has already trained {done} epochs")


def resolved_precision(precision: str, device_name: str) -> str:
    """auto: bf16 where it is fast (any CUDA GPU this code targets, a CPU with native bf16), else fp32."""
    if precision != "auto":
        return precision
    import torch  # here, not above: the options load without it
    on_gpu = device_name != "cpu" and torch.cuda.is_available()
    return "bf16" if on_gpu or devices.cpu_has_native_bf16() else "fp32"
