"""sweep.png: accuracy against the swept value (the last --grid option, its values evenly spaced in the
order given), one line per combination of the other options, error bars the 95 % intervals (clipped to
[0, 100] %, see summary.interval); validation (which chooses) beside test (reported); the verdict in
the title. A matplotlib Figure, no pyplot."""
import itertools
from pathlib import Path

from matplotlib.figure import Figure

from common.files import atomic_write

from .plan import Plan, shown


def draw(rows: list, plan: Plan, path: Path, verdict: str):
    names = list(plan.grid)
    x_name, groups = (names[-1], names[:-1]) if names else (None, [])
    x_values = plan.grid[x_name] if x_name else [None]
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, metric, title in zip(axes, ("val_acc", "test_acc"), ("validation (chooses)", "test (reported)")):
        for group in itertools.product(*(plan.grid[g] for g in groups)):
            points = [(i, r[metric]) for i, x in enumerate(x_values) for r in rows
                      if r["n"] and all(r["setting"][g] == v for g, v in zip(groups, group))
                      and (x_name is None or r["setting"][x_name] == x)]
            if points:
                line(ax, points, " ".join(f"{g}={shown(v)}" for g, v in zip(groups, group)) or None)
        ax.set_xticks(range(len(x_values)), [shown(v) for v in x_values] if x_name else ["options after --"])
        ax.set_xlabel(x_name or "")
        ax.set_title(f"{title}: mean, 95 % interval over seeds", fontsize=10)
        ax.grid(alpha=0.3)
    low, high = axes[0].get_ylim()  # the autoscale's margins stop where accuracy does
    axes[0].set_ylim(max(low, 0), min(high, 100))
    axes[0].set_ylabel("final accuracy (%)")
    if groups:
        axes[1].legend(fontsize=8)
    fig.suptitle(f"sweep {plan.name}: {len(plan.points())} trials, {plan.seeds} seed(s) per setting"
                 + (f"; {verdict}" if verdict else ""))
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)


def line(ax, points: list, label: str | None):
    """points: (x position, interval) pairs; one seed draws a point without a bar."""
    means = [s["mean"] * 100 for _, s in points]
    below = [0 if s["low"] is None else (s["mean"] - s["low"]) * 100 for _, s in points]
    above = [0 if s["high"] is None else (s["high"] - s["mean"]) * 100 for _, s in points]
    ax.errorbar([x for x, _ in points], means, yerr=[below, above], marker="o", capsize=4, label=label)
