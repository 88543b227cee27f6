"""One trial: the point Optuna hands out, trained by the same fit as train.py in the point's own run
directory (resumed from its last.pt when an earlier attempt left one); the final validation accuracy
goes back to Optuna, the rest is kept on the trial and as TensorBoard HParams beside the run."""
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from common.cli import Stopped, UserError
from nets import checkpoint
from training import Result, fit

from . import hparams
from .plan import Plan, Point
from .study import point_of


def run(trial: optuna.Trial, plan: Plan, label: str = "") -> float:
    """Optuna's objective. A user error in the run (a diverging LR, say) is the trial's result: kept,
    shown, and the sweep goes on; a signal stops the sweep (the run saved its step first)."""
    point = plan.point({k: trial.suggest_categorical(k, v) for k, v in plan.search_space().items()})
    trial.set_user_attr("run", point.name)
    other = duplicate_of(trial, plan, point)
    if other is not None:  # a point queued twice: quietly give way (no training, no line)
        raise optuna.TrialPruned(f"trial {other} has {point.name}")
    out = plan.dir / point.name
    last = out / "last.pt"
    say = f"{label}trial {trial.number} {point.label}:"
    print(f"{say} {resuming(last) if last.exists() else 'starts'} (log: {out / 'train.log'})", flush=True)
    try:
        result = train(plan.config(point, resume=str(last) if last.exists() else ""), out)
    except Stopped as e:  # fit saved the step reached; the sweep, not train.py --resume, goes on from there
        raise Stopped(f"{say} stopped by signal {e.code - 128}, its last.pt holding the step reached: run the "
                      "same sweep command again to go on", e.code - 128) from None
    except UserError as e:
        trial.set_user_attr("error", str(e))
        print(f"{say} failed: {e}", flush=True)
        return float("nan")  # Optuna records a FAIL; the summary shows the reason
    metrics = final_metrics(result)
    for k, v in metrics.items():
        trial.set_user_attr(k, v)
    hparams.write(out, plan, point, metrics)
    print(f"{say} val {metrics['val_acc']:.2%}, test {metrics['test_acc']:.2%} ({metrics['weights']}), "
          f"{metrics['seconds']:.1f} s", flush=True)
    return metrics["val_acc"]


def duplicate_of(trial: optuna.Trial, plan: Plan, point: Point) -> int | None:
    """Another trial of the same point that has its result, or that runs and started before this one
    (start time, then number: one order every worker agrees on, so exactly one of them trains)."""
    trials = trial.study.get_trials(deepcopy=False)
    mine = next(((t.datetime_start, t.number) for t in trials if t.number == trial.number), (datetime.max, 0))
    for t in trials:
        if t.number == trial.number or point_of(plan, t) != point:
            continue
        if (t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)
                or (t.state == TrialState.RUNNING and (t.datetime_start, t.number) < mine)):
            return t.number
    return None


def resuming(last: Path) -> str:
    state = checkpoint.load(last)
    step = state["step"]
    into = f", {step} step{'s' * (step != 1)} into the next" if step else ""
    return f"resumes from its last.pt ({state['epoch']} of {state['config']['epochs']} epochs done{into})"


def train(cfg, out: Path) -> Result:
    """fit, its table and notes going to RUN/train.log (appended: a resumed run continues its log), so
    that several trials at once keep the terminal readable."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "a") as log, redirect_stdout(log), redirect_stderr(log):
        return fit(cfg)


def final_metrics(result: Result) -> dict:
    """The last epoch's accuracies of the weights viz.py evaluates: the EMA when the run keeps one."""
    cfg, last = result.config, result.history[-1]
    prefix = "ema_" if cfg.ema else ""
    return {"val_acc": last[f"{prefix}val_acc"], "test_acc": last[f"{prefix}test_acc"],
            "weights": ("EMA" if cfg.ema else "raw") + " weights" + (", flip TTA" if cfg.tta else ""),
            "seconds": sum(row["seconds"] for row in result.history), "epochs": len(result.history)}
