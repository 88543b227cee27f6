"""What a training run tells people: an aligned table on stdout, metrics.csv and TensorBoard events."""
import csv
import sys
from pathlib import Path

from common.tables import row as table_row

# (history key, column header, format spec, shown when); accuracies are stored as fractions.
COLUMNS = [("epoch", "epoch", "d", None), ("lr", "lr", ".2e", None), ("batch_size", "batch", "d", "ramp"),
           ("train_loss", "train loss", ".5g", None), ("train_acc", "train acc", ".2%", None),
           ("val_loss", "val loss", ".5g", "val"), ("val_acc", "val acc", ".2%", "val"),
           ("test_loss", "test loss", ".5g", None), ("test_acc", "test acc", ".2%", None),
           ("ema_test_acc", "EMA acc", ".2%", "ema"), ("img_s", "img/s", ",.0f", None),
           ("seconds", "sec", ".1f", None)]
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


def progress(batches: int, initial: int, batch_size: int, enabled: bool):
    """A tqdm bar in images, with img/s and ETA, when stdout is a terminal; otherwise nothing, so
    logs stay plain rows. It counts batches, shown as images (unit_scale)."""
    from tqdm import tqdm
    return tqdm(total=batches, initial=initial, leave=False, dynamic_ncols=True, unit="img",
                unit_scale=batch_size, disable=not (enabled and sys.stdout.isatty()), file=sys.stdout)


def summary(history: list) -> str:
    """The headline: the final epoch's test accuracy (what papers report; choosing the best epoch on
    the test set would leak it), and the best validation accuracy when there is a split."""
    last = history[-1]
    seconds = sum(r["seconds"] for r in history)
    line = f"done: final test acc {last['test_acc']:.2%}"
    if "ema_test_acc" in last:
        line += f" (EMA weights {last['ema_test_acc']:.2%})"
    line += f" after {len(history)} epochs in {seconds:.1f} s"
    if "val_acc" in last:
        best = max(history, key=lambda r: r["val_acc"])
        line += f"; best val acc {best['val_acc']:.2%} at epoch {best['epoch']} (best.pt)"
    return line
