"""The training run, top to bottom: set up, optionally the LR range test, then for each epoch train,
evaluate, save. The run's mutable state is one small object (Run); checkpoints are made from it."""
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

import pipeline
from common.cli import UsageError
from common.files import write_text
from nets import checkpoint

from . import distributed, lr_finder, rng, runlog
from .build import build_model, build_optimizer, build_scheduler, precision
from .config import Config
from .data import eval_loaders, loader_options, split
from .guard import Guard
from .step import evaluate, train_step


@dataclass
class Run:
    """What changes as a run trains, and what a checkpoint holds besides the config and the data's facts."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    epoch: int = 0                 # epochs finished
    step: int = 0                  # batches done in the current epoch (non-zero after an interrupt)
    partial: dict | None = None    # running sums of an interrupted epoch, summed over ranks
    history: list = field(default_factory=list)
    best_acc: float = 0.0

    def restore(self, saved: dict):
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        rng.restore(saved["rng"])
        self.epoch, self.step, self.partial = saved["epoch"], saved["step"], saved["partial"]
        self.history, self.best_acc = saved["history"], saved["best_acc"]

    def state(self, cfg: Config, data: pipeline.Dataset) -> dict:
        """The checkpoint (format: nets/checkpoint.py)."""
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict() if self.scheduler else None,
                    scaler=self.scaler.state_dict(), epoch=self.epoch, step=self.step,
                    partial=self.partial, rng=rng.state(), config=dataclasses.asdict(cfg),
                    classes=list(data.classes), mean=list(data.mean), std=list(data.std),
                    image_size=data.image_size, history=self.history, best_acc=self.best_acc)


def fit(cfg: Config, resumed: dict | None = None):
    out = Path(cfg.out)
    if resumed is None and not cfg.find_lr and (out / "last.pt").exists():
        raise UsageError(f"{out} already holds a run: continue it with --resume {out / 'last.pt'} "
                         "or pick another --out")
    process = distributed.start(cfg.device)
    if process.world > 1 and (cfg.find_lr or cfg.lr_auto):
        raise UsageError("run the LR range test on one process, then pass its --lr to torchrun")

    # Data first: a missing or broken dataset fails before anything is written.
    data = pipeline.open_dataset(cfg.data, cfg.data_dir, cfg.image_size)
    if data.note:
        print(f"note: {data.note}", file=sys.stderr, flush=True)
    parts = split(cfg, data)
    rng.seed_everything(cfg.seed)
    autocast, scaler, dtype = precision(cfg, process.device)
    options = loader_options(cfg, data, process, dtype)
    start = (resumed["epoch"], resumed["step"]) if resumed else (0, 0)
    train_loader = data.train_loader(*parts["train"], seed=cfg.seed, start_epoch=start[0],
                                     start_step=start[1], **options)
    if len(train_loader) == 0:
        raise UsageError(f"{len(parts['train'][1])} training images make no full batch of "
                         f"{cfg.batch_size} per process: lower --batch-size")
    evals = eval_loaders(data, parts, options)

    model = build_model(cfg, len(data.classes), process.device)
    optimizer = build_optimizer(cfg, model, process.device)
    step_model = distributed.wrap(torch.compile(model) if cfg.compile else model, process)  # save `model`
    step = partial(train_step, step_model, optimizer, scaler, autocast, smoothing=cfg.label_smoothing)
    if (cfg.find_lr or cfg.lr_auto) and not resumed:
        find_lr(cfg, data, parts, options, step, optimizer, (model, optimizer, scaler), process.main)
        if cfg.find_lr:
            return
    run = Run(model, optimizer, build_scheduler(cfg, optimizer, len(train_loader)), scaler)
    if resumed:
        run.restore(resumed)

    log = None
    if process.main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
        log = runlog.RunLog(out, "val" in parts, run.epoch)
        print(describe(cfg, process, parts, resumed and start), flush=True)
        log.header()
    guard = Guard(process.device, cfg.lr)
    for epoch in range(run.epoch, cfg.epochs):
        sums, seconds = train_one_epoch(run, cfg, train_loader, step, guard, process)
        kept = f"{out / 'last.pt'} still holds epoch {epoch}" if epoch else "no checkpoint written"
        guard.check_loss(epoch, kept)
        if guard.signum:
            interrupted(run, cfg, data, guard, epoch, {"sums": distributed.total(sums), "seconds": seconds},
                        process.main)
        metrics = evaluate_all(model, evals, autocast, process.device)
        guard.check_model(model, metrics, epoch, kept)
        if cfg.scheduler == "plateau":  # on held-out training data when there is some
            run.scheduler.step(metrics.get("val", metrics["test"])["loss"])
        row = epoch_row(run, epoch, distributed.total(sums), metrics, seconds)
        run.history.append(row)
        run.best_acc = max(run.best_acc, row["test_acc"])
        run.epoch, run.step, run.partial = epoch + 1, 0, None
        if process.main:
            save(run, cfg, data, best=row["test_acc"] >= run.best_acc)
            log.epoch(row, run.history)
    if process.main:
        print(runlog.summary(run.history), flush=True)
        log.close()
    distributed.finish()


def train_one_epoch(run: Run, cfg: Config, loader, step, guard: Guard, process) -> tuple:
    """Train until the epoch ends or the guard says stop. Returns the (loss sum, correct, images)
    totals of this rank, on the device (no host sync inside the epoch), and the seconds spent."""
    # A resumed partial epoch carries totals already summed over all ranks: rank 0 adds them once.
    carried = run.partial or {"sums": [0.0, 0.0, 0.0], "seconds": 0.0}
    sums = torch.tensor(carried["sums"] if process.main else [0.0] * 3, dtype=torch.float64,
                        device=process.device)
    guard.new_epoch()
    t0 = time.perf_counter()
    bar = runlog.progress(len(loader), run.step, cfg.batch_size * process.world, process.main)
    for x, y in loader:
        loss, correct = step(x, y)
        if cfg.scheduler == "onecycle":
            run.scheduler.step()
        guard.watch(loss, run.step)
        # full_like, not new_tensor: a host-to-device copy here would sync every step.
        sums += torch.stack([loss * len(y), correct, torch.full_like(loss, len(y))]).double()
        run.step += 1
        bar.update()
        if guard.should_stop(run.step):
            break
    bar.close()
    guard.should_stop(run.step, epoch_end=True)  # every rank learns of a signal or a bad loss
    return sums, carried["seconds"] + time.perf_counter() - t0


def evaluate_all(model, loaders: dict, autocast, device) -> dict:
    """Loss and accuracy of each held-out part, every image exactly once, summed over ranks."""
    distributed.share_buffers(model)  # every rank evaluates the weights rank 0 saves
    metrics = {}
    for name, loader in loaders.items():
        loss, correct, count = distributed.total(evaluate(model, loader, autocast, device))
        metrics[name] = {"loss": loss / count, "acc": correct / count, "count": int(count)}
    return metrics


def epoch_row(run: Run, epoch: int, sums: list, metrics: dict, seconds: float) -> dict:
    loss_sum, correct, seen = sums
    row = dict(epoch=epoch + 1, lr=run.optimizer.param_groups[0]["lr"], train_loss=loss_sum / seen,
               train_acc=correct / seen, train_count=int(seen), test_loss=metrics["test"]["loss"],
               test_acc=metrics["test"]["acc"], test_count=metrics["test"]["count"], img_s=seen / seconds,
               seconds=seconds)
    if "val" in metrics:
        row.update(val_loss=metrics["val"]["loss"], val_acc=metrics["val"]["acc"])
    return row


def save(run: Run, cfg: Config, data, best: bool = False):
    state = run.state(cfg, data)
    checkpoint.save(Path(cfg.out) / "last.pt", state)
    if best:
        checkpoint.save(Path(cfg.out) / "best.pt", state)


def interrupted(run: Run, cfg: Config, data, guard: Guard, epoch: int, partial: dict, main: bool):
    """A signal: save the step reached (every rank stopped at the same one) and exit 128 + signal."""
    guard.check_model(run.model, {}, epoch, f"{Path(cfg.out) / 'last.pt'} still holds epoch {epoch}")
    run.partial = partial
    if main:
        save(run, cfg, data)
        print(f"stopped by signal {guard.signum} at epoch {epoch + 1}, step {run.step}: resume with "
              f"--resume {Path(cfg.out) / 'last.pt'}", flush=True)
    sys.exit(128 + guard.signum)


def find_lr(cfg: Config, data, parts: dict, options: dict, step, optimizer, restore: tuple, main: bool):
    """The LR range test on its own stream of batches, restoring what it changed (restore: model,
    optimizer, scaler); sets cfg.lr and the optimizer's LR to its suggestion."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    loader = data.train_loader(*parts["train"], seed=cfg.seed + 1, **options)
    batches = (b for _ in iter(int, 1) for b in loader)  # as many epochs as it takes
    result = lr_finder.range_test(lambda x, y: step(x, y)[0], optimizer, batches, restore,
                                  steps=cfg.find_lr_steps)
    lr_finder.plot(result, out / "lr_find.png")
    if main:
        print(f"LR range test: suggested max LR {result.suggestion:.3g} (plot: {out / 'lr_find.png'})",
              flush=True)
    cfg.lr = result.suggestion
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr


def describe(cfg: Config, process, parts: dict, resumed_at) -> str:
    world = process.world
    line = (f"{cfg.model} on {process.device}{f' x{world}' if world > 1 else ''} | "
            f"{len(parts['train'][1])} train / {len(parts['test'][1])} test images | "
            f"batch {cfg.batch_size * world} | {cfg.optimizer} lr {cfg.lr:.3g} {cfg.scheduler} | "
            f"{cfg.precision}{' channels-last' if cfg.channels_last else ''}")
    if resumed_at:
        line += f" | resumed at epoch {resumed_at[0] + 1}" + (f" step {resumed_at[1]}" if resumed_at[1] else "")
    return line
