"""What a training run tells people: the describing line, an aligned table on stdout (plain rows: clean
in a log file and in a saved notebook), metrics.csv and TensorBoard events, and the closing line."""
import csv
import dataclasses
import json
from pathlib import Path

from common.chance import at_chance, guessing_range
from common.files import write_text
from common.progress import bar as progress_bar
from common.tables import row as table_row

# (history key, column header, format spec, shown when); accuracies are stored as fractions.
COLUMNS = [("epoch", "epoch", "d", None), ("lr", "lr", ".2e", None), ("batch_size", "batch", "d", "ramp"),
           ("train_loss", "train loss", ".4f", None), ("train_acc", "train acc", ".2%", None),
           ("val_loss", "val loss", ".4f", "val"), ("val_acc", "val acc", ".2%", "val"),
           ("test_loss", "test loss", ".4f", None), ("test_acc", "test acc", ".2%", None),
           ("ema_test_acc", "EMA acc", ".2%", "ema"), ("img_s", "img/s", ",.0f", None),
           ("seconds", "epoch s", ".1f", None)]
WIDTH = 10  # fits the widest header and 9.2616e+10


def columns(val: bool, ema: bool, ramp: bool) -> list:
    """(key, header, format) of the columns this run shows."""
    shown = {None, *(name for name, on in (("val", val), ("ema", ema), ("ramp", ramp)) if on)}
    return [(key, head, spec) for key, head, spec, when in COLUMNS if when in shown]


class RunLog:
    """One row per epoch; only the process that owns the run (rank 0) creates one."""

    def __init__(self, out: Path, columns: list, start_epoch: int):
        self.out, self.columns = out, columns
        from torch.utils.tensorboard import SummaryWriter  # heavy import: only where it is used
        # purge_step drops events that a killed run wrote after its last checkpoint.
        self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_epoch + 1)

    def header(self):
        print(table_row([head for _, head, _ in self.columns], [WIDTH] * len(self.columns)), flush=True)

    def epoch(self, row: dict, history: list):
        print(table_row([format(row[key], spec) for key, _, spec in self.columns], [WIDTH] * len(self.columns)),
              flush=True)
        for key, _, _ in self.columns[1:]:
            self.tb.add_scalar(key, row[key], row["epoch"])
        self.tb.flush()
        self.write_csv(history)

    def write_csv(self, history: list):
        """Rewritten whole from the history each epoch: a resumed run's file matches its checkpoint."""
        keys = [key for key, _, _ in self.columns]
        with open(self.out / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)

    def close(self):
        self.tb.close()


def start(cfg, process, parts: dict, start_epoch: int, resumed_at) -> RunLog | None:
    """Rank 0: the run directory, config.json, the describing line and the table's header."""
    if not process.main:
        return None
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    log = RunLog(out, columns(val="val" in parts, ema=bool(cfg.ema), ramp=cfg.batch_ramp), start_epoch)
    print(describe(cfg, process, parts, resumed_at), flush=True)
    log.header()
    return log


def describe(cfg, process, parts: dict, resumed_at) -> str:
    world = process.world
    line = (f"{cfg.model} on {process.device}{f' x{world}' if world > 1 else ''} | "
            f"{len(parts['train'][1])} train / {len(parts['test'][1])} test images | "
            f"batch {cfg.batch_size * world} | {cfg.optimizer} lr {cfg.lr:.3g} {cfg.scheduler} | "
            f"{cfg.precision}{' channels-last' if cfg.channels_last else ''} | evaluated: {weights(cfg)}")
    if resumed_at:
        line += f" | resumed at epoch {resumed_at[0] + 1}" + (f" step {resumed_at[1]}" if resumed_at[1] else "")
    return line


def weights(cfg) -> str:
    """Which weights the accuracies are of, and how they are evaluated."""
    return ("raw and EMA weights" if cfg.ema else "raw weights") + (", flip TTA" if cfg.tta else ", no TTA")


def progress(batches: int, initial: int, batch_size: int, enabled: bool):
    """The epoch's bar in images, with img/s and ETA (common.progress's rule for where it shows). It counts
    batches, shown as images (unit_scale)."""
    return progress_bar(total=batches, initial=initial, enabled=enabled, dynamic_ncols=True, unit="img",
                        unit_scale=batch_size)


def summary(history: list, tta: bool, classes: int, wall_seconds: float | None = None) -> str:
    """The headline: the final epoch's test accuracy, of each set of weights (what papers report:
    choosing the best epoch on the test set would leak it), whether it is no better than guessing
    among `classes`, the best validation accuracy when there is a split, and the wall time of this
    process."""
    last, how = history[-1], ", flip TTA" if tta else ", no TTA"
    line = f"done: final test acc {last['test_acc']:.2%} (raw weights{how})"
    if "ema_test_acc" in last:
        line += f", {last['ema_test_acc']:.2%} (EMA weights{how})"
    line += f" after {len(history)} epoch{'s' * (len(history) != 1)}"
    line += chance(last, classes)
    if "val_acc" in last:
        best = max(history, key=lambda r: r["val_acc"])
        line += f"; best val acc {best['val_acc']:.2%} at epoch {best['epoch']}"
    return line + ("" if wall_seconds is None else f"; wall time {wall_seconds:.1f} s")


def chance(last: dict, classes: int) -> str:
    """The headline's clause for final test accuracies no better than guessing (common.chance's rule),
    or "" when every one beats it."""
    images = last["test_count"]
    guessing = [name for key, name in (("test_acc", "raw"), ("ema_test_acc", "EMA"))
                if key in last and at_chance(last[key], classes, images)]
    if not guessing:
        return ""
    low, high = guessing_range(classes, images)
    return (f"; AT CHANCE ({' and '.join(guessing)} weights): guessing 1 of {classes} classes scores "
            f"{low:.1%}-{high:.1%} on {images} test images 95 % of the time, so nothing learned shows")
