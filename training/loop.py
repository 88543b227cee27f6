"""The training run, top to bottom: set up, optionally the LR range test, then for each epoch train,
evaluate, save. What changes as it trains is one small object (Run); checkpoints are made from it."""
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
from .ema import EMA
from .guard import Guard
from .step import GradientNoise, evaluate, train_step


@dataclass
class Run:
    """What changes as a run trains: what a checkpoint holds besides the config and the data's facts."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    batch_size: int                # per process; grows under --batch-ramp
    scheduler: object = None
    epoch: int = 0                 # epochs finished
    step: int = 0                  # batches done in the current epoch (non-zero after an interrupt)
    partial: dict | None = None    # running sums of an interrupted epoch, summed over ranks
    history: list = field(default_factory=list)  # one row per finished epoch
    lr_steps: list = field(default_factory=list)  # the LR of every step so far
    best_val_acc: float | None = None

    def models(self) -> dict:
        """The weights a run evaluates and checks, by metric prefix: the raw ones and their EMA."""
        return {"": self.model, **({"ema_": self.ema.model} if self.ema else {})}

    def restore(self, saved: dict):
        """Everything but the optimizer and the schedule (restore_schedule), which need the batch size."""
        self.model.load_state_dict(saved["model"])
        self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        rng.restore(saved["rng"])
        self.epoch, self.step, self.partial = saved["epoch"], saved["step"], saved["partial"]
        self.history, self.lr_steps = saved["history"], saved["lr_steps"]
        self.batch_size, self.best_val_acc = saved["batch_size"], saved["best_val_acc"]

    def restore_schedule(self, saved: dict):
        """After the scheduler is built: OneCycleLR's constructor sets the optimizer's LR to its first
        value, so the optimizer's saved state (its LR included) must be loaded after it."""
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])

    def state(self, cfg: Config, data: pipeline.Dataset) -> dict:
        """The checkpoint (format: nets/checkpoint.py)."""
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict() if self.scheduler else None,
                    scaler=self.scaler.state_dict(), ema=self.ema.state_dict() if self.ema else None,
                    epoch=self.epoch, step=self.step, partial=self.partial, rng=rng.state(),
                    config=dataclasses.asdict(cfg), classes=list(data.classes), mean=list(data.mean),
                    std=list(data.std), image_size=data.image_size, history=self.history,
                    lr_steps=self.lr_steps, batch_size=self.batch_size, best_val_acc=self.best_val_acc)


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
    model = build_model(cfg, len(data.classes), process.device)
    optimizer = build_optimizer(cfg, model, process.device)
    step_model = distributed.wrap(torch.compile(model) if cfg.compile else model, process)  # save `model`
    train = partial(train_step, step_model, optimizer, scaler, autocast, smoothing=cfg.label_smoothing)
    if (cfg.find_lr or cfg.lr_auto) and not resumed:
        find_lr(cfg, data, parts, options, train, optimizer, (model, optimizer, scaler), process.main)
        if cfg.find_lr:
            return
    run = Run(model, optimizer, scaler, EMA(model, cfg.ema) if cfg.ema else None, cfg.batch_size)
    if resumed:
        run.restore(resumed)
    loader = train_loader(cfg, data, parts, options, run)
    run.scheduler = build_scheduler(cfg, optimizer, len(loader))
    if resumed:
        run.restore_schedule(resumed)
    if cfg.grad_noise:
        train = partial(train, noise=GradientNoise(model.parameters(), cfg.grad_noise, cfg.seed,
                                                   process.device, step=len(run.lr_steps)))
    evals = eval_loaders(data, parts, options)
    log = start_log(cfg, process, parts, run, resumed)
    with Guard(process.device, cfg.lr) as guard:
        for epoch in range(run.epoch, cfg.epochs):
            if loader.batch_size != run.batch_size:  # --batch-ramp grew it
                loader = train_loader(cfg, data, parts, options, run)
            sums, seconds = train_one_epoch(run, cfg, loader, train, guard, process)
            kept = f"{out / 'last.pt'} still holds epoch {epoch}" if epoch else "no checkpoint written"
            guard.check_loss(epoch, kept)
            if guard.signum:
                interrupted(run, cfg, data, guard, epoch, {"sums": distributed.total(sums),
                                                           "seconds": seconds}, process.main)
            metrics = evaluate_all(run, evals, autocast, process.device, cfg.tta)
            guard.check_models(run.models().values(), metrics, epoch, kept)
            end_epoch(run, cfg, epoch, distributed.total(sums), metrics, seconds, len(parts["train"][1]),
                      process.world)
            if process.main:
                save(run, cfg, data, best="val" in metrics and run.history[-1]["val_acc"] == run.best_val_acc)
                log.epoch(run.history[-1], run.history)
    if process.main:
        print(runlog.summary(run.history), flush=True)
        log.close()
    distributed.finish()


def train_loader(cfg: Config, data, parts: dict, options: dict, run: Run):
    """The training loader at the run's batch size, from the epoch and step it has reached."""
    loader = data.train_loader(*parts["train"], seed=cfg.seed, start_epoch=run.epoch, start_step=run.step,
                               **{**options, "batch_size": run.batch_size})
    if len(loader) == 0:
        raise UsageError(f"{len(parts['train'][1])} training images make no full batch of "
                         f"{run.batch_size} per process: lower --batch-size")
    return loader


def start_log(cfg: Config, process, parts: dict, run: Run, resumed):
    """Rank 0: the run directory, config.json, the describing line and the table's header."""
    if not process.main:
        return None
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    log = runlog.RunLog(out, runlog.columns(val="val" in parts, ema=bool(cfg.ema), ramp=cfg.batch_ramp),
                        run.epoch)
    print(describe(cfg, process, parts, resumed and (run.epoch, run.step)), flush=True)
    log.header()
    return log


def train_one_epoch(run: Run, cfg: Config, loader, train, guard: Guard, process) -> tuple:
    """Train until the epoch ends or the guard says stop. Returns the (loss sum, correct, images)
    totals of this rank, on the device (no host sync inside the epoch), and the seconds spent."""
    # A resumed partial epoch carries totals already summed over all ranks: rank 0 adds them once.
    carried = run.partial or {"sums": [0.0, 0.0, 0.0], "seconds": 0.0}
    sums = torch.tensor(carried["sums"] if process.main else [0.0] * 3, dtype=torch.float64,
                        device=process.device)
    guard.new_epoch()
    t0 = time.perf_counter()
    bar = runlog.progress(len(loader), run.step, run.batch_size * process.world, process.main)
    for x, y in loader:
        run.lr_steps.append(run.optimizer.param_groups[0]["lr"])
        loss, correct = train(x, y)
        if run.ema is not None:
            run.ema.update(len(run.lr_steps) - 1)
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


def evaluate_all(run: Run, loaders: dict, autocast, device, tta: bool) -> dict:
    """Loss and accuracy of each held-out part ("test", "val"), every image exactly once, summed over
    ranks; for the EMA weights too ("ema_test", "ema_val")."""
    metrics = {}
    for prefix, model in run.models().items():
        distributed.share_buffers(model)  # every rank evaluates the BatchNorm statistics rank 0 saves
        for name, loader in loaders.items():
            loss, correct, count = distributed.total(evaluate(model, loader, autocast, device, tta))
            metrics[prefix + name] = {"loss": loss / count, "acc": correct / count, "count": int(count)}
    return metrics


def end_epoch(run: Run, cfg: Config, epoch: int, sums: list, metrics: dict, seconds: float,
              train_images: int, world: int):
    """The epoch's row in the history; the plateau schedule's step (or, with --batch-ramp, a larger
    batch where it cut the LR); the best validation accuracy."""
    loss_sum, correct, seen = sums
    row = dict(epoch=epoch + 1, lr=run.optimizer.param_groups[0]["lr"], batch_size=run.batch_size * world,
               train_loss=loss_sum / seen, train_acc=correct / seen, train_count=int(seen),
               img_s=seen / seconds, seconds=seconds)
    for name, m in metrics.items():
        row.update({f"{name}_loss": m["loss"], f"{name}_acc": m["acc"], f"{name}_count": m["count"]})
    if cfg.scheduler == "plateau":
        ramp_or_cut(run, cfg, metrics["val"]["loss"], train_images, world)
    run.history.append(row)
    if "val" in metrics:
        run.best_val_acc = max(run.best_val_acc or 0.0, row["val_acc"])
    run.epoch, run.step, run.partial = epoch + 1, 0, None


def ramp_or_cut(run: Run, cfg: Config, val_loss: float, train_images: int, world: int):
    """ReduceLROnPlateau's step; under --batch-ramp a cut becomes a batch larger by the same factor
    (Smith et al. 2017: same noise scale), while the batch fits --max-batch-size and the data."""
    before = [g["lr"] for g in run.optimizer.param_groups]
    run.scheduler.step(val_loss)
    after = run.optimizer.param_groups[0]["lr"]
    if not cfg.batch_ramp or after >= before[0]:
        return
    grown = round(run.batch_size * before[0] / after)
    if grown <= cfg.max_batch_size and train_images // world // grown >= 1:
        run.batch_size = grown
        for group, lr in zip(run.optimizer.param_groups, before):
            group["lr"] = lr


def save(run: Run, cfg: Config, data, best: bool = False):
    state = run.state(cfg, data)
    checkpoint.save(Path(cfg.out) / "last.pt", state)
    if best:
        checkpoint.save(Path(cfg.out) / "best.pt", state)


def interrupted(run: Run, cfg: Config, data, guard: Guard, epoch: int, partial: dict, main: bool):
    """A signal: save the step reached (every rank stopped at the same one) and exit 128 + signal."""
    guard.check_models(run.models().values(), {}, epoch, f"{Path(cfg.out) / 'last.pt'} still holds epoch {epoch}")
    run.partial = partial
    if main:
        save(run, cfg, data)
        print(f"stopped by signal {guard.signum} at epoch {epoch + 1}, step {run.step}: resume with "
              f"--resume {Path(cfg.out) / 'last.pt'}", flush=True)
    sys.exit(128 + guard.signum)


def find_lr(cfg: Config, data, parts: dict, options: dict, train, optimizer, restore: tuple, main: bool):
    """The LR range test on its own stream of batches, restoring what it changed (restore: model,
    optimizer, scaler); sets cfg.lr and the optimizer's LR to its suggestion."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    loader = data.train_loader(*parts["train"], seed=cfg.seed + 1, **options)
    batches = (b for _ in iter(int, 1) for b in loader)  # as many epochs as it takes
    result = lr_finder.range_test(lambda x, y: train(x, y)[0], optimizer, batches, restore,
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
