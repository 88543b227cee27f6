"""Each trial's settings and final metrics as TensorBoard HParams, written into the run's own
tensorboard/ folder beside its curves, so `tensorboard --logdir runs/sweeps/NAME` lists every trial in
its HParams tab (table, parallel coordinates, scatter) and opens a trial's curves from there."""
from pathlib import Path

from .plan import Plan, Point, shown

SUFFIX = ".hparams"  # marks the events file, so a trial counted again writes no second one


def write(out: Path, plan: Plan, point: Point, metrics: dict):
    from torch.utils.tensorboard import SummaryWriter  # heavy imports: only where they are used
    from torch.utils.tensorboard.summary import hparams

    folder = out / "tensorboard"
    if any(folder.glob(f"*{SUFFIX}")):
        return
    values, domains = {"seed": point.seed}, {"seed": list(range(plan.seeds))}
    for option, choices in plan.grid.items():
        # Numbers stay numbers (sortable, plottable); anything else (on/off, names, 'auto') is text.
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
        values[option] = point.setting[option] if numeric else shown(point.setting[option])
        domains[option] = list(choices) if numeric else [shown(c) for c in choices]
    scalars = {"sweep/val_acc": metrics["val_acc"], "sweep/test_acc": metrics["test_acc"]}
    with SummaryWriter(str(folder), filename_suffix=SUFFIX) as writer:
        for summary in hparams(values, scalars, domains):
            writer.file_writer.add_summary(summary)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, metrics["epochs"])
