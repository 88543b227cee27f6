"""The training run, top to bottom: set up, then for each epoch train, evaluate, save. What changes as it
trains is one small object (Run); checkpoints are made from it. fit() is what train.py and a notebook
call, and what it returns (Result) says what the run produced."""
import dataclasses
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

import pipeline
from common import cli, device as devices
from common.cli import Stopped, UsageError
from nets import checkpoint

from . import distributed, lr_finder, rng, runlog
from .build import build_model, build_optimizer, build_scheduler
from .config import Config, continued, resolve
from .setup import Setup, prepare
from .ema import EMA
from .guard import Guard
from .rundir import claim
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


@dataclass(repr=False)
class Result:
    """What a finished run produced."""
    config: Config            # as resolved and trained (the LR the range test chose, the run directory)
    history: list             # one dict per epoch: losses, accuracies, LR, img/s, seconds
    checkpoint: Path          # RUN/last.pt
    best: Path | None         # RUN/best.pt, chosen on the validation split (None without one)
    summary: str              # the closing line

    @property
    def final_test_acc(self) -> float:
        return self.history[-1]["test_acc"]

    def __repr__(self):
        return self.summary


def fit(cfg: Config) -> Result:
    """Train cfg's run (or continue cfg.resume) to its last epoch."""
    if cfg.find_lr:  # train.py --find-lr calls find_lr instead: the same config never trains silently
        raise UsageError(f"{cli.spelled('find_lr', True)} asks for the LR range test alone: call find_lr(config) "
                         "for it (train.py --find-lr), or drop find_lr to train")
    started = time.perf_counter()
    resumed = checkpoint.load(cfg.resume) if cfg.resume else None
    cfg = resolve(continued(cfg, resumed) if resumed else cfg)
    problem = cfg.compile and devices.compile_problem(cfg.device)
    if problem:
        raise UsageError(f"--compile: {problem}")
    process, log = distributed.start(cfg.device, cfg.deterministic), None
    try:  # a run that stops (a signal, a bad loss: an exception in a notebook) closes what it opened
        with claim(cfg, process, new_run=resumed is None):
            setup = prepare(cfg, process)
            if resumed and resumed["epoch"] >= cfg.epochs:
                return finished(cfg, resumed, process)
            if cfg.lr == "auto":
                setup = dataclasses.replace(setup, cfg=dataclasses.replace(cfg, lr=lr_finder.usable_lr(setup)))
            run, loader, train = start_run(setup, resumed)
            log = runlog.start(setup.cfg, process, setup.parts, run.epoch, resumed and (run.epoch, run.step))
            write_skipped(setup)
            held_out = setup.eval_loaders()  # once per run: a pipeline each (on a GPU, the set uploaded)
            with Guard(process.device, setup.cfg.lr) as guard:
                for epoch in range(run.epoch, setup.cfg.epochs):
                    if loader.batch_size != run.batch_size:  # --batch-ramp grew it
                        loader = setup.train_loader(run.batch_size, run.epoch, run.step)
                    one_epoch(setup, run, loader, held_out, train, guard, log)
            return closing(setup, run, time.perf_counter() - started)
    finally:
        if log:
            log.close()
        distributed.finish()


def start_run(setup: Setup, resumed: dict | None) -> tuple:
    """(run, its training loader, its step function): built from the seed, or restored."""
    cfg, process = setup.cfg, setup.process
    rng.seed_everything(cfg.seed)
    model = build_model(cfg, len(setup.data.classes), process.device)
    optimizer = build_optimizer(cfg, model, process.device)
    # Compile the DDP-wrapped model, so that DDP's communication overlaps the compiled backward.
    step_model = distributed.wrap(model, process)
    step_model = torch.compile(step_model) if cfg.compile else step_model  # `model` is what is saved
    scaler = setup.precision.scaler
    train = partial(train_step, step_model, optimizer, scaler, setup.precision.autocast,
                    smoothing=cfg.label_smoothing)
    run = Run(model, optimizer, scaler, EMA(model, cfg.ema) if cfg.ema else None, cfg.batch_size)
    if resumed:
        run.restore(resumed)
    loader = setup.train_loader(run.batch_size, run.epoch, run.step)
    if len(loader) == 0:
        raise UsageError(f"{len(setup.parts['train'][1])} training images make no full batch of "
                         f"{run.batch_size} per process: lower --batch-size")
    run.scheduler = build_scheduler(cfg, optimizer, len(loader))
    if resumed:
        run.restore_schedule(resumed)
    if cfg.grad_noise:
        train = partial(train, noise=GradientNoise(model.parameters(), cfg.grad_noise, cfg.seed,
                                                   process.device, step=len(run.lr_steps)))
    return run, loader, train


def one_epoch(setup: Setup, run: Run, loader, held_out: dict, train, guard: Guard, log):
    """Train, check, evaluate, check, record and save one epoch; a signal saves the step and stops.
    held_out: the run's loaders of the held-out parts (Setup.eval_loaders)."""
    cfg, process, epoch, t0 = setup.cfg, setup.process, run.epoch, time.perf_counter()
    wall_before = (run.partial or {}).get("wall", 0.0)
    sums, seconds = train_one_epoch(run, cfg, loader, train, guard, process)
    kept = f"{Path(cfg.out) / 'last.pt'} still holds epoch {epoch}" if epoch else "no checkpoint written"
    guard.check_loss(epoch, kept)
    if guard.signum:
        interrupted(run, setup, guard, {"sums": distributed.total(sums), "seconds": seconds,
                                        "wall": wall_before + time.perf_counter() - t0})
    metrics = evaluate_all(run, held_out, setup.precision.autocast, process.device, cfg.tta)
    guard.check_models(run.models().values(), metrics, epoch, kept)
    timing = {"train_seconds": seconds, "seconds": wall_before + time.perf_counter() - t0}  # wall: + eval
    end_epoch(run, cfg, distributed.total(sums), metrics, timing, len(setup.parts["train"][1]), process.world)
    if process.main:
        best = cfg.keep_best and "val" in metrics and run.history[-1]["val_acc"] == run.best_val_acc
        save(run, cfg, setup.data, best)
        log.epoch(run.history[-1], run.history)


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


def end_epoch(run: Run, cfg: Config, sums: list, metrics: dict, timing: dict, train_images: int, world: int):
    """The epoch's row in the history; the plateau schedule's step (or, with --batch-ramp, a larger
    batch where it cut the LR); the best validation accuracy. timing: train_seconds (the steps, for
    img/s) and seconds (the epoch's wall time, evaluation included)."""
    loss_sum, correct, seen = sums
    # lr: the epoch's last step's, not the optimizer's now (the next step's: past OneCycle's end it is
    # its peak again).
    row = dict(epoch=run.epoch + 1, lr=run.lr_steps[-1], batch_size=run.batch_size * world,
               train_loss=loss_sum / seen, train_acc=correct / seen, train_count=int(seen),
               img_s=seen / timing["train_seconds"], **timing)
    for name, m in metrics.items():
        row.update({f"{name}_loss": m["loss"], f"{name}_acc": m["acc"], f"{name}_count": m["count"]})
    if cfg.scheduler == "plateau":
        ramp_or_cut(run, cfg, metrics["val"]["loss"], train_images, world)
    run.history.append(row)
    if "val" in metrics:
        run.best_val_acc = max(run.best_val_acc or 0.0, row["val_acc"])
    run.epoch, run.step, run.partial = run.epoch + 1, 0, None


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


def interrupted(run: Run, setup: Setup, guard: Guard, sums_so_far: dict):
    """A signal: save the step reached (every rank stopped at the same one), with the interrupted
    epoch's running sums, and stop with Stopped."""
    out, epoch = Path(setup.cfg.out), run.epoch
    guard.check_models(run.models().values(), {}, epoch, f"{out / 'last.pt'} still holds epoch {epoch}")
    run.partial = sums_so_far
    if setup.process.main:
        save(run, setup.cfg, setup.data)
    raise Stopped(f"stopped by signal {guard.signum} at epoch {epoch + 1}, step {run.step}: resume with "
                  f"--resume {out / 'last.pt'}", guard.signum)


def closing(setup: Setup, run: Run, wall_seconds: float) -> Result:
    out = Path(setup.cfg.out)
    summary = runlog.summary(run.history, setup.cfg.tta, len(setup.data.classes), wall_seconds)
    if setup.process.main:
        print(summary, flush=True)
    return Result(setup.cfg, run.history, out / "last.pt", best_path(setup.cfg, run.best_val_acc), summary)


def finished(cfg: Config, resumed: dict, process) -> Result:
    """--resume of a run that has trained all its epochs: nothing to do, and how to train on."""
    history, out = resumed["history"], Path(cfg.out)
    more = ("pass --epochs N (more than now) with --resume to train on" if cfg.scheduler != "onecycle" else
            "its OneCycle schedule has ended: start a new run with more --epochs and another --out to "
            "train longer")
    summary = (f"{out} already finished its {cfg.epochs} epochs: "
               f"{runlog.summary(history, cfg.tta, len(resumed['classes']))}; {more}")
    if process.main:
        print(summary, flush=True)
    return Result(cfg, history, out / "last.pt", best_path(cfg, resumed["best_val_acc"]), summary)


def best_path(cfg: Config, best_val_acc) -> Path | None:
    return Path(cfg.out) / "best.pt" if cfg.keep_best and best_val_acc is not None else None


def write_skipped(setup: Setup):
    """--skip-bad-images: the files left out, beside the run (the count is in the data's note)."""
    if setup.process.main and setup.data.bad_files:
        (Path(setup.cfg.out) / "bad_images.txt").write_text("".join(f"{f}\n" for f in setup.data.bad_files))
