"""The sweep's results, read from the study (so every machine sharing it reports the same): per setting
the seeds that finished, the mean and 95 % interval (Student's t over the seeds) of the final validation
and test accuracies, and a run's mean wall time; printed as a table, written as summary.csv and
summary.json, drawn as sweep.png. The best setting is the one with the best mean validation accuracy."""
import csv
import io
import json
import math
from statistics import fmean, stdev

from optuna.trial import TrialState

from common.files import write_text
from common.tables import markdown

from .plan import Plan, Point, shown
from .study import progress

SELECTION = ("chosen on validation accuracy (the final epoch's, on --val-split of the training images); "
             "test accuracy is reported beside it and never chooses")
WEIGHTS = "accuracies of the weights viz.py evaluates: the EMA when a run keeps one, else the raw weights"


def interval(values: list) -> dict:
    """Mean and 95 % interval; with one seed there is no interval (low = high = None)."""
    from scipy.stats import t as student_t  # here, not in every worker process that imports the package
    mean, n = fmean(values), len(values)
    half = student_t.ppf(0.975, n - 1) * stdev(values) / math.sqrt(n) if n > 1 else None
    return {"mean": mean, "low": None if half is None else mean - half,
            "high": None if half is None else mean + half, "values": values}


def settings(study, plan: Plan) -> list:
    """One dict per setting, in the grid's order; each (setting, seed) counted once."""
    done = progress(study, plan).done
    rows = []
    for setting in plan.settings():
        trials = [done[p.name] for p in (Point(setting, s) for s in range(plan.seeds)) if p.name in done]
        ok = [t for t in trials if t.state == TrialState.COMPLETE]
        row = {"setting": setting, "n": len(ok), "seeds": [t.params["seed"] for t in ok],
               "failed": [t.user_attrs["error"] for t in trials if t.state == TrialState.FAIL]}
        if ok:
            row.update(val_acc=interval([t.user_attrs["val_acc"] for t in ok]),
                       test_acc=interval([t.user_attrs["test_acc"] for t in ok]),
                       seconds=fmean(t.user_attrs["seconds"] for t in ok))
        rows.append(row)
    return rows


def percent(stat: dict | None) -> str:
    if stat is None:
        return "–"
    if stat["low"] is None:
        return f"{stat['mean']:.2%}"
    return f"{stat['mean'] * 100:.2f} ± {(stat['high'] - stat['mean']) * 100:.2f} %"


def table(rows: list, plan: Plan) -> str:
    names = list(plan.grid) or ["setting"]
    lines = []
    for r in rows:
        values = [shown(r["setting"][k]) for k in plan.grid] or ["options after --"]
        n = f"{r['n']}" + (f" ({len(r['failed'])} failed)" if r["failed"] else "")
        wall = f"{r['seconds']:.1f}" if r["n"] else "–"
        lines.append([*values, n, percent(r.get("val_acc")), percent(r.get("test_acc")), wall])
    return markdown([*names, "seeds", "val acc (95 % CI)", "test acc (95 % CI)", "wall s / run"], lines)


def best(rows: list) -> dict | None:
    finished = [r for r in rows if r["n"]]
    return max(finished, key=lambda r: r["val_acc"]["mean"]) if finished else None


def report(study, plan: Plan) -> dict:
    """Print the table and the choice; write summary.csv, summary.json and sweep.png; return the JSON."""
    from .plot import draw  # matplotlib: only once there is something to draw
    rows = settings(study, plan)
    chosen = best(rows)
    failed = [e for r in rows for e in r["failed"]]
    print(f"\n{SELECTION}; {WEIGHTS}\n{table(rows, plan)}", flush=True)
    if chosen:
        label = " ".join(f"{k}={shown(v)}" for k, v in chosen["setting"].items()) or "the options after --"
        print(f"best by validation: {label}: val {percent(chosen['val_acc'])}, test {percent(chosen['test_acc'])} "
              "(reported, not chosen on)", flush=True)
    if failed:
        print(f"{len(failed)} trial(s) failed, first: {failed[0]}", flush=True)
    plan.dir.mkdir(parents=True, exist_ok=True)
    summary = {"sweep": plan.name, "selection": SELECTION, "weights": WEIGHTS, **plan.definition(),
               "trials": len(plan.points()), "settings": rows, "best": chosen and chosen["setting"]}
    write_text(plan.dir / "summary.json", json.dumps(summary, indent=2))
    write_text(plan.dir / "summary.csv", as_csv(rows, plan))
    draw(rows, plan, plan.dir / "sweep.png")
    print(f"wrote {plan.dir}/summary.csv, summary.json, sweep.png; each trial's HParams: tensorboard --logdir "
          f"{plan.dir}", flush=True)
    return summary


def as_csv(rows: list, plan: Plan) -> str:
    text = io.StringIO()
    writer = csv.writer(text)
    stats = [f"{m}_{s}" for m in ("val_acc", "test_acc") for s in ("mean", "low", "high")]
    writer.writerow([*plan.grid, "n", "failed", *stats, "seconds_mean"])
    for r in rows:
        cells = [r.get(m, {}).get(s) if r["n"] else None for m in ("val_acc", "test_acc")
                 for s in ("mean", "low", "high")]
        writer.writerow([*(shown(r["setting"][k]) for k in plan.grid), r["n"], len(r["failed"]), *cells,
                         r.get("seconds")])
    return text.getvalue()
