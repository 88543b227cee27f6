"""What a training run tells people: an aligned table on stdout, metrics.csv and TensorBoard events."""
import csv
import sys
from pathlib import Path

from common.tables import row as table_row

# (history key, column header, format spec); accuracies are stored as fractions.
COLUMNS = [("epoch", "epoch", "d"), ("lr", "lr", ".2e"), ("train_loss", "train loss", ".5g"),
           ("train_acc", "train acc", ".2%"), ("val_loss", "val loss", ".5g"),
           ("val_acc", "val acc", ".2%"), ("test_loss", "test loss", ".5g"),
           ("test_acc", "test acc", ".2%"), ("img_s", "img/s", ",.0f"), ("seconds", "sec", ".1f")]
WIDTH = 10  # fits the widest header and 9.2616e+10


class RunLog:
    """One row per epoch; only the process that owns the run (rank 0) creates one."""

    def __init__(self, out: Path, with_val: bool, start_epoch: int):
        self.out = out
        self.columns = [c for c in COLUMNS if with_val or not c[0].startswith("val")]
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
    best = max(history, key=lambda r: r["test_acc"])
    seconds = sum(r["seconds"] for r in history)
    return (f"done: best test acc {best['test_acc']:.2%} (epoch {best['epoch']}), "
            f"final {history[-1]['test_acc']:.2%}, {len(history)} epochs in {seconds:.1f} s")
