"""The sweep's result: per setting, the mean and 95 % interval over seeds of the final validation and
test accuracies, and a run's mean wall time; printed as a table, written as summary.csv and
summary.json, drawn as sweep.png. The setting with the best mean validation accuracy is named best only
when it beats the runner-up on the seeds both ran (a paired interval that excludes 0); otherwise no
setting is distinguishable, and the sweep says so."""
import csv
import io
import json
from statistics import fmean

from optuna.trial import TrialState

from common.files import write_text
from common.intervals import Interval
from common.tables import markdown

from .plan import Plan, Point, shown
from .study import progress

SELECTION = ("chosen on validation accuracy (the final epoch's, on --val-split of the training images); "
             "test accuracy is reported beside it and never chooses")
WEIGHTS = "accuracies of the weights viz.py evaluates: the EMA when a run keeps one, else the raw weights"


def interval(values: list, bounds: tuple = (0.0, 1.0)) -> dict:
    """Mean and 95 % interval over seeds (common.intervals), clipped to bounds (an accuracy: [0, 1]);
    with one seed there is no interval (low = high = None)."""
    i = Interval.of(values, bounds)
    return {"mean": i.mean, "low": i.low if i.n > 1 else None, "high": i.high if i.n > 1 else None,
            "values": values}


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
    """An accuracy's mean and interval (asymmetric where clipped at 0 or 100 %)."""
    if stat is None:
        return "–"
    if stat["low"] is None:
        return f"{stat['mean']:.2%}"
    return f"{stat['mean'] * 100:.2f} % [{stat['low'] * 100:.2f}, {stat['high'] * 100:.2f}]"


def points(stat: dict) -> str:
    """A difference of accuracies in percentage points, with its interval when there is one."""
    text = f"{stat['mean'] * 100:+.2f} points"
    return text if stat["low"] is None else f"{text} [{stat['low'] * 100:+.2f}, {stat['high'] * 100:+.2f}]"


def table(rows: list, plan: Plan) -> str:
    names = list(plan.grid) or ["setting"]
    lines = []
    for r in rows:
        values = [shown(r["setting"][k]) for k in plan.grid] or ["options after --"]
        n = f"{r['n']}" + (f" ({len(r['failed'])} failed)" if r["failed"] else "")
        wall = f"{r['seconds']:.1f}" if r["n"] else "–"
        lines.append([*values, n, percent(r.get("val_acc")), percent(r.get("test_acc")), wall])
    return markdown([*names, "seeds", "val acc [95 % CI]", "test acc [95 % CI]", "wall s / run"], lines)


def paired(a: dict, b: dict) -> dict:
    """a's validation accuracy minus b's, seed by seed over the seeds both finished: the same seed means
    the same data order, augmentation and initial weights, so what they share cancels out."""
    theirs = dict(zip(b["seeds"], b["val_acc"]["values"]))
    shared = [s for s in a["seeds"] if s in theirs]
    mine = dict(zip(a["seeds"], a["val_acc"]["values"]))
    if not shared:
        return {"mean": None, "low": None, "high": None, "values": [], "seeds": []}
    return {**interval([mine[s] - theirs[s] for s in shared], bounds=(-1.0, 1.0)), "seeds": shared}


def choose(rows: list) -> dict:
    """The leader (best mean validation accuracy; the grid's order breaks a tie), the runner-up, their
    paired difference, and whether it tells them apart: its 95 % interval excludes 0. A leader alone
    (one setting, or the others all failed) has nothing to be told from."""
    ranked = sorted((r for r in rows if r["n"]), key=lambda r: -r["val_acc"]["mean"])
    leader, runner_up = (ranked + [None, None])[:2]
    difference = paired(leader, runner_up) if runner_up else None
    distinguishable = leader is not None and (
        difference is None or (difference["low"] is not None and difference["low"] > 0))
    return {"leader": leader, "runner_up": runner_up, "difference": difference,
            "best": leader if distinguishable else None}


def label(row: dict) -> str:
    return " ".join(f"{k}={shown(v)}" for k, v in row["setting"].items()) or "the options after --"


def scores(row: dict) -> str:
    return f"val {percent(row['val_acc'])}, test {percent(row['test_acc'])} (reported, not chosen on)"


def verdict(chosen: dict) -> str:
    """The line that names the best setting, or says why none is named ("" without any result)."""
    leader, runner_up, difference = chosen["leader"], chosen["runner_up"], chosen["difference"]
    if leader is None:
        return ""
    if runner_up is None:
        return f"only {label(leader)} has a result: {scores(leader)}"
    seeds = ", ".join(map(str, difference["seeds"]))
    versus = (f"{label(leader)} minus {label(runner_up)} on the same seeds ({seeds}): {points(difference)}"
              if seeds else f"{label(leader)} and {label(runner_up)} finished no seed in common")
    if chosen["best"]:
        return f"best by validation: {label(leader)}: {scores(leader)}; {versus}"
    why = "; its 95 % interval includes 0" if difference["low"] is not None else ""
    return (f"no setting distinguishable by validation: {versus}{why}: more --seeds (or a longer run) may tell "
            "them apart")


def title(chosen: dict) -> str:
    """The verdict in a few words, for the plot ("" with nothing to compare)."""
    if chosen["runner_up"] is None:
        return ""
    return f"best: {label(chosen['best'])}" if chosen["best"] else "no setting distinguishable"


def report(study, plan: Plan) -> dict:
    """Print the table and the choice; write summary.csv, summary.json and sweep.png; return the JSON."""
    from .plot import draw  # matplotlib: only once there is something to draw
    rows = settings(study, plan)
    chosen = choose(rows)
    failed = [e for r in rows for e in r["failed"]]
    line = verdict(chosen)
    print(f"\n{SELECTION}; {WEIGHTS}\n{table(rows, plan)}", flush=True)
    if line:
        print(line, flush=True)
    if failed:
        print(f"{len(failed)} trial(s) failed, first: {failed[0]}", flush=True)
    plan.dir.mkdir(parents=True, exist_ok=True)
    summary = {"sweep": plan.name, "selection": SELECTION, "weights": WEIGHTS, **plan.definition(),
               "trials": len(plan.points()), "settings": rows, "verdict": line,
               "best": chosen["best"] and chosen["best"]["setting"],
               "leader": chosen["leader"] and chosen["leader"]["setting"],
               "runner_up": chosen["runner_up"] and chosen["runner_up"]["setting"],
               "difference": chosen["difference"]}
    write_text(plan.dir / "summary.json", json.dumps(summary, indent=2))
    write_text(plan.dir / "summary.csv", as_csv(rows, plan))
    draw(rows, plan, plan.dir / "sweep.png", title(chosen))
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
