"""The objects a run trains with, built from its Config: model, precision, optimizer, LR schedule."""
from typing import NamedTuple

import torch

import nets
from common.cli import UsageError

from .config import Config


def build_model(cfg: Config, num_classes: int, device) -> torch.nn.Module:
    model = nets.create(cfg.model, num_classes, cfg.zero_init_residual).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # NHWC: the layout tensor cores want
    return model


class Precision(NamedTuple):
    autocast: torch.autocast
    scaler: torch.amp.GradScaler
    loader_dtype: torch.dtype  # what the data pipelines emit


def precision(cfg: Config, device) -> Precision:
    """Autocast, gradient scaler and loader dtype for cfg.precision (resolved: bf16, fp16 or fp32)."""
    autocast = torch.autocast(device.type, enabled=cfg.precision != "fp32",
                              dtype=torch.float16 if cfg.precision == "fp16" else torch.bfloat16)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    # DALI has no bfloat16: it emits float16 on the GPU and autocast casts in the first conv.
    dtype = torch.float16 if cfg.precision != "fp32" and device.type == "cuda" else torch.float32
    return Precision(autocast, scaler, dtype)


def parameter_groups(cfg: Config, model) -> list:
    """Weight decay on every parameter, or with --no-norm-bias-decay on the conv and linear weights only
    (BatchNorm scales and shifts and the biases are then free: decaying them shrinks what the next
    layer rescales anyway, the argument of Goyal et al. 2017 for leaving them out)."""
    decayed, free = [], []
    for p in model.parameters():
        (decayed if p.ndim > 1 or cfg.norm_bias_decay else free).append(p)
    return [{"params": decayed, "weight_decay": cfg.weight_decay}, {"params": free, "weight_decay": 0.0}]


def build_optimizer(cfg: Config, model, device) -> torch.optim.Optimizer:
    params, fused = parameter_groups(cfg, model), device.type == "cuda"  # fused: one launch per step
    kw = dict(lr=cfg.lr)
    if cfg.optimizer in ("sgd", "nesterov"):
        return torch.optim.SGD(params, momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov",
                               fused=fused, **kw)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, momentum=cfg.momentum, **kw)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer](params, fused=fused, **kw)


def build_scheduler(cfg: Config, optimizer, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "onecycle":  # per step; LR warms up to cfg.lr over 25 %, then anneals
        if total < 3:
            raise UsageError(f"OneCycle needs at least 3 steps, this run has {total}: train longer "
                             "or pass --scheduler none")
        return torch.optim.lr_scheduler.OneCycleLR(  # each phase at least 1 step on tiny runs
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=max(0.25, 2 / total),
            cycle_momentum=False)  # keep --momentum what the user asked for
    if cfg.scheduler == "plateau":  # per epoch, on the validation loss
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
            threshold=cfg.plateau_threshold, threshold_mode=cfg.plateau_threshold_mode)
    return None
