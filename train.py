"""Train ResNet18/34 on CIFAR-10 with DALI pipelines: one loop, read top to bottom.

  python train.py                                  # ResNet18, 20 epochs, OneCycle, bf16, channels-last
  python train.py --find-lr                        # LR range test: plot, suggested max LR, exit
  python train.py --lr auto                        # range test, then train with its suggestion
  python train.py --resume runs/resnet18/last.pt   # continue exactly where a run stopped
  torchrun --nproc_per_node=8 train.py             # several GPUs: DDP, one DALI shard per rank
"""
import argparse
import dataclasses
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import cli
import lr_finder
import nets
import pipeline
import runlog
from cli import UsageError
from nets import checkpoint

OPTIMIZERS = ("sgd", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULERS = ("onecycle", "plateau", "none")
DEFAULT_LR = {"sgd": 0.2, "nesterov": 0.2, "rmsprop": 1e-3, "adam": 2e-3, "adamw": 2e-3}
# Flags that may differ when resuming: where and how to run, not what is trained.
RUNTIME_FLAGS = {"resume", "device", "data_dir", "out", "compile"}


@dataclass
class Config:
    model: str = "resnet18"
    data: str = "cifar10"              # cifar10 | imagefolder
    data_dir: str = "data"
    image_size: int = 0                # imagefolder only: 0 = the images' own size
    out: str = "runs/resnet18"
    epochs: int = 20
    batch_size: int = 512              # per process (per GPU)
    optimizer: str = "nesterov"
    lr: float = 0.0                    # max LR for OneCycle; 0 = the optimizer's default
    lr_auto: bool = False              # run the LR range test first and use its suggestion
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    scheduler: str = "onecycle"
    plateau_patience: int = 2
    plateau_factor: float = 0.2
    plateau_threshold: float = 1e-3
    plateau_threshold_mode: str = "rel"
    val_split: float = 0.0
    precision: str = "bf16"            # bf16 | fp16 (with a gradient scaler) | fp32
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    limit_train: int = 0               # smoke runs: first N training / test images (0 = all)
    limit_test: int = 0
    find_lr: bool = False
    find_lr_steps: int = 200
    resume: str = ""

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
        ]
        for bad, message in problems:
            if bad:
                raise UsageError(message)


def lr_value(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def parse_args(argv) -> dict:
    """Only the flags given on the command line (the rest come from Config or the checkpoint)."""
    p = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
               argument_default=argparse.SUPPRESS)
    d = Config()
    p.add_argument("--model", choices=sorted(nets.MODELS), help=f"default {d.model}")
    p.add_argument("--data", choices=pipeline.KINDS,
                   help="cifar10 (default) or imagefolder: DATA_DIR/{train,test}/<class>/*.jpg|png")
    p.add_argument("--data-dir", help=f"dataset folder (default ./{d.data_dir})")
    p.add_argument("--image-size", type=int, help="imagefolder: resize to this size")
    p.add_argument("--out", help=f"run directory (default {d.out})")
    p.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    p.add_argument("--batch-size", type=int, help=f"per process; default {d.batch_size}")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default {d.optimizer}")
    p.add_argument("--lr", type=lr_value, help="max LR (OneCycle) or LR; 'auto' = range test first")
    p.add_argument("--momentum", type=float, help=f"sgd/nesterov/rmsprop; 0 = plain SGD; default {d.momentum}")
    p.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay}")
    p.add_argument("--label-smoothing", type=float, help=f"default {d.label_smoothing}")
    p.add_argument("--scheduler", choices=SCHEDULERS, help=f"default {d.scheduler}")
    p.add_argument("--plateau-patience", type=int, help=f"epochs without improvement; default {d.plateau_patience}")
    p.add_argument("--plateau-factor", type=float, help=f"LR multiplier; default {d.plateau_factor}")
    p.add_argument("--plateau-threshold", type=float, help=f"default {d.plateau_threshold}")
    p.add_argument("--plateau-threshold-mode", choices=("rel", "abs"), help="default rel")
    p.add_argument("--val-split", type=float, help="hold out this fraction of train (by seed)")
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), help=f"default {d.precision}")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="default on")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the model")
    p.add_argument("--seed", type=int, help=f"default {d.seed}")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), help="default auto")
    p.add_argument("--limit-train", type=int, help="train on the first N images (smoke runs)")
    p.add_argument("--limit-test", type=int, help="evaluate the first N test images")
    p.add_argument("--find-lr", action="store_true", help="LR range test only, then exit")
    p.add_argument("--find-lr-steps", type=int, help="steps of the range test (default 200)")
    p.add_argument("--resume", help="checkpoint to continue from (its config is used)")
    given = vars(p.parse_args(argv))
    if given.get("lr") == "auto":
        given.update(lr=0.0, lr_auto=True)
    return given


def build_config(given: dict, resumed: dict | None) -> Config:
    if resumed is None:
        cfg = Config(**given)
    else:
        stored = resumed["config"]
        clash = [k for k, v in given.items() if k not in RUNTIME_FLAGS and stored.get(k) != v]
        if clash:
            k = clash[0]
            raise UsageError(f"--{k.replace('_', '-')} {given[k]} differs from the checkpoint's "
                             f"{stored.get(k)}: drop the flag to resume, or start a new run with another --out")
        cfg = Config(**{**stored, "out": str(Path(given["resume"]).parent), **given})
    cfg.lr = cfg.lr or DEFAULT_LR[cfg.optimizer]
    cfg.check()
    return cfg


# ---------------------------------------------------------------------------------------- setup
def distributed():
    """(rank, world, local_rank) from torchrun's environment; (0, 1, 0) for a plain run."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", 0)), world, int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(cfg: Config, local_rank: int) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA GPU is visible: use --device cpu or auto")
    if cfg.device == "auto" and not torch.cuda.is_available():
        print("warning: no GPU found, training on the CPU (slow); --device cpu silences this",
              file=sys.stderr, flush=True)
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    return torch.device("cuda", local_rank)


def split(cfg: Config, data: pipeline.Dataset) -> dict:
    """{"train", "val", "test"}: (items, labels); the validation rows are fixed by the seed."""
    (items, labels), (test_items, test_labels) = data.train, data.test
    order = np.random.default_rng(cfg.seed).permutation(len(labels))
    n_val = int(round(cfg.val_split * len(order)))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    train = train[:cfg.limit_train or None]
    test = slice(0, cfg.limit_test or None)
    parts = {"train": (items[train], labels[train]), "test": (test_items[test], test_labels[test])}
    if n_val:
        parts["val"] = (items[val], labels[val])
    return parts


def build_model(cfg: Config, num_classes: int, device) -> torch.nn.Module:
    model = nets.create(cfg.model, num_classes).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # NHWC: the layout tensor cores want
    return model


def precision(cfg: Config, device) -> tuple:
    """(autocast context, gradient scaler, dtype the loaders emit) for cfg.precision on device."""
    amp = torch.autocast(device.type, enabled=cfg.precision != "fp32",
                         dtype=torch.float16 if cfg.precision == "fp16" else torch.bfloat16)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    # DALI has no bfloat16: it emits float16 on the GPU and autocast casts in the first conv.
    dtype = torch.float16 if cfg.precision != "fp32" and device.type == "cuda" else torch.float32
    return amp, scaler, dtype


def build_optimizer(cfg: Config, model, device) -> torch.optim.Optimizer:
    params, fused = model.parameters(), device.type == "cuda"  # fused kernels: one launch per step
    kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
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


class Stop:
    """SIGINT/SIGTERM: finish the current step, save, exit. A second signal exits at once."""

    def __init__(self):
        self.signum = 0
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        if self.signum:
            sys.exit(128 + signum)
        self.signum = signum


# -------------------------------------------------------------------------------------- the loop
def train_step(model, optimizer, scaler, amp, x, y, smoothing=0.0):
    """Forward, backward, update. Returns the loss and correct count as tensors (no host sync)."""
    with amp:
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach().float(), (logits.argmax(1) == y).sum()


@torch.inference_mode()
def evaluate(model, loader, amp, world, device) -> dict:
    """Loss and accuracy over every image of the split exactly once (summed over ranks)."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for x, y in loader:
        with amp:
            logits = model(x).float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        sums += torch.stack([loss, (logits.argmax(1) == y).sum(), torch.full_like(loss, len(y))])
    model.train()
    loss, correct, count = reduce(sums, world)
    return {"loss": loss / count, "acc": correct / count, "count": int(count)}


def reduce(sums: torch.Tensor, world: int) -> list:
    """Sum a small tensor of totals over all ranks; one host sync."""
    if world > 1:
        torch.distributed.all_reduce(sums)
    return sums.tolist()


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict):
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv=None):
    given = parse_args(sys.argv[1:] if argv is None else argv)
    resumed = checkpoint.load(given["resume"]) if "resume" in given else None
    cfg = build_config(given, resumed)
    out = Path(cfg.out)
    if resumed is None and not cfg.find_lr and (out / "last.pt").exists():
        raise UsageError(f"{out} already holds a run: continue it with --resume {out / 'last.pt'} "
                         "or pick another --out")
    rank, world, local_rank = distributed()
    if world > 1 and (cfg.find_lr or cfg.lr_auto):
        raise UsageError("run the LR range test on one process, then pass its --lr to torchrun")
    device = resolve_device(cfg, local_rank)
    main_process = rank == 0
    say = print if main_process else (lambda *a, **k: None)

    # Data first: a missing or broken dataset fails before anything is written.
    data = pipeline.open_dataset(cfg.data, cfg.data_dir, cfg.image_size)
    if data.note:
        print(f"note: {data.note}", file=sys.stderr, flush=True)
    parts = split(cfg, data)
    seed_everything(cfg.seed)
    start_epoch, start_step = (resumed["epoch"], resumed["step"]) if resumed else (0, 0)
    gpu = device.index if device.type == "cuda" else None
    amp, scaler, dtype = precision(cfg, device)
    common = dict(mean=data.mean, std=data.std, batch_size=cfg.batch_size, device_id=gpu, dtype=dtype,
                  channels_last=cfg.channels_last, shard_id=rank, num_shards=world)
    train_loader = data.train_loader(*parts["train"], seed=cfg.seed, start_epoch=start_epoch,
                                     start_step=start_step, **common)
    if len(train_loader) == 0:
        raise UsageError(f"{len(parts['train'][1])} training images make no full batch of "
                         f"{cfg.batch_size} per process: lower --batch-size")
    eval_loaders = {k: data.eval_loader(*parts[k], **common) for k in parts if k != "train"}

    model = build_model(cfg, len(data.classes), device)
    optimizer = build_optimizer(cfg, model, device)
    step_model = torch.compile(model) if cfg.compile else model  # checkpoints save `model`: no prefix
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=None if gpu is None else [gpu])

    def step(x, y):
        return train_step(step_model, optimizer, scaler, amp, x, y, cfg.label_smoothing)

    if (cfg.find_lr or cfg.lr_auto) and not resumed:
        out.mkdir(parents=True, exist_ok=True)
        finder_loader = data.train_loader(*parts["train"], seed=cfg.seed + 1, **common)
        batches = (b for _ in iter(int, 1) for b in finder_loader)  # as many epochs as it takes
        result = lr_finder.range_test(model, optimizer, lambda x, y: step(x, y)[0], batches,
                                      steps=cfg.find_lr_steps)
        lr_finder.plot(result, out / "lr_find.png")
        say(f"LR range test: suggested max LR {result.suggestion:.3g} (plot: {out / 'lr_find.png'})")
        if cfg.find_lr:
            return
        cfg.lr = result.suggestion
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr
    scheduler = build_scheduler(cfg, optimizer, len(train_loader))

    history, best_acc, partial = [], 0.0, None
    if resumed:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        set_rng_state(resumed["rng"])
        history, best_acc, partial = resumed["history"], resumed["best_acc"], resumed["partial"]

    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        log = runlog.RunLog(out, "val" in parts, start_epoch)
        say(describe(cfg, device, world, parts, resumed and (start_epoch, start_step)))
        log.header()

    def save(epoch, step_in_epoch=0, partial=None):
        if not main_process:
            return
        state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                     scheduler=scheduler.state_dict() if scheduler else None, scaler=scaler.state_dict(),
                     epoch=epoch, step=step_in_epoch, partial=partial, rng=rng_state(),
                     config=dataclasses.asdict(cfg), classes=list(data.classes), mean=list(data.mean),
                     std=list(data.std), image_size=data.image_size, history=history, best_acc=best_acc)
        checkpoint.save(out / "last.pt", state)
        if partial is None and history[-1]["test_acc"] >= best_acc:
            checkpoint.save(out / "best.pt", state)

    stop = Stop()
    for epoch in range(start_epoch, cfg.epochs):
        done = start_step if epoch == start_epoch else 0
        # Totals stay on the device (loss sum, correct, images): no host sync inside the epoch.
        # A resumed partial epoch carries totals summed over all ranks: rank 0 adds them once.
        carried = partial or {"sums": [0.0, 0.0, 0.0], "seconds": 0.0}
        sums = torch.tensor(carried["sums"] if main_process else [0.0] * 3, dtype=torch.float64,
                            device=device)
        first_nonfinite = torch.tensor(-1, device=device)
        t0 = time.perf_counter()
        bar = runlog.progress(len(train_loader), done, cfg.batch_size * world, main_process)
        for x, y in train_loader:
            loss, correct = step(x, y)
            if cfg.scheduler == "onecycle":
                scheduler.step()
            first_nonfinite = torch.where((first_nonfinite < 0) & ~loss.isfinite(), done, first_nonfinite)
            # full_like, not new_tensor: a host-to-device copy here would sync every step.
            sums += torch.stack([loss * len(y), correct, torch.full_like(loss, len(y))]).double()
            done += 1
            bar.update()
            if stop_requested(stop, world, device, done):
                break
            if world == 1 and done % 50 == 0 and int(first_nonfinite) >= 0:
                break  # diverged: stop now, not at the end of the epoch (ranks would disagree here)
        bar.close()
        stop_requested(stop, world, device, 0)  # the epoch ended: every rank learns of a signal
        bad = int(first_nonfinite)
        if bad >= 0:
            kept = f"{out / 'last.pt'} still holds epoch {epoch}" if epoch else "no checkpoint written"
            raise UsageError(f"the loss became non-finite at epoch {epoch + 1}, step {bad + 1}: "
                             f"lower --lr (was {cfg.lr:.3g}); {kept}")
        if stop.signum:
            seconds = carried["seconds"] + time.perf_counter() - t0
            save(epoch, done, {"sums": reduce(sums, world), "seconds": seconds})
            say(f"stopped by signal {stop.signum} at epoch {epoch + 1}, step {done}: resume with "
                f"--resume {out / 'last.pt'}")
            sys.exit(128 + stop.signum)
        loss_sum, correct_sum, seen = reduce(sums, world)
        train_seconds = carried["seconds"] + time.perf_counter() - t0
        partial = None
        if world > 1:  # BN running stats drift per rank: evaluate everywhere what rank 0 saves
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, 0)
        metrics = {k: evaluate(model, loader, amp, world, device) for k, loader in eval_loaders.items()}
        if cfg.scheduler == "plateau":  # on held-out training data when there is some
            scheduler.step(metrics.get("val", metrics["test"])["loss"])
        row = dict(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], train_loss=loss_sum / seen,
                   train_acc=correct_sum / seen, train_count=int(seen), test_loss=metrics["test"]["loss"],
                   test_acc=metrics["test"]["acc"], test_count=metrics["test"]["count"],
                   img_s=seen / train_seconds,
                   seconds=carried["seconds"] + time.perf_counter() - t0)
        if "val" in metrics:
            row.update(val_loss=metrics["val"]["loss"], val_acc=metrics["val"]["acc"])
        history.append(row)
        best_acc = max(best_acc, row["test_acc"])
        save(epoch + 1)
        if main_process:
            log.epoch(row, history)
    if main_process:
        say(runlog.summary(history))
        log.close()
    if world > 1:
        torch.distributed.destroy_process_group()


def stop_requested(stop: Stop, world: int, device, step: int) -> bool:
    """Ranks must stop at the same step: they agree every 20 steps and at the end of each epoch
    (step 0), with one tiny all-reduce. A single process just looks at its flag."""
    if world == 1 or step % 20:
        return bool(stop.signum) and world == 1
    flag = torch.tensor([stop.signum], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    stop.signum = int(flag)
    return bool(stop.signum)


def describe(cfg: Config, device, world: int, parts: dict, resumed_at) -> str:
    line = (f"{cfg.model} on {device}{f' x{world}' if world > 1 else ''} | "
            f"{len(parts['train'][1])} train / {len(parts['test'][1])} test images | "
            f"batch {cfg.batch_size * world} | {cfg.optimizer} lr {cfg.lr:.3g} {cfg.scheduler} | "
            f"{cfg.precision}{' channels-last' if cfg.channels_last else ''}")
    if resumed_at:
        line += f" | resumed at epoch {resumed_at[0] + 1}" + (f" step {resumed_at[1]}" if resumed_at[1] else "")
    return line


if __name__ == "__main__":
    cli.run(main)
