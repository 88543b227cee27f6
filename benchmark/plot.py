"""bench.png: the stages as bars (median, min-max whiskers) and, after --scaling, each loader's images/s
against batch size and threads. A matplotlib Figure, no pyplot (no GUI state, safe in any process)."""
from matplotlib.figure import Figure

from common.files import atomic_write

from .loaders import NAMES
from .stages import LABELS, MODELS, PIPELINES

COLOURS = {"dali": "tab:green", "torch_ops": "tab:blue", "dataloader": "tab:orange", "model": "tab:grey"}


def draw(report: dict, path):
    scaling = report.get("scaling")
    fig = Figure(figsize=(12, 8.5 if scaling else 4.5), layout="constrained")
    axes = fig.subplots(2 if scaling else 1, 2, squeeze=False)
    dev, c = report["device"], report["config"]
    fig.suptitle(f"{c['model']}, batch {c['batch_size']}, {c['precision']} | {dev['type']}: {dev['name']} "
                 f"({dev['cores']} cores)")
    bars(axes[0][0], report["results"], PIPELINES, "each loader alone", log=True)
    bars(axes[0][1], report["results"], MODELS, "training step: alone and fed by each loader",
         tax=report["ratios"]["data_loading_tax_by_loader"])
    if scaling:
        curves(axes[1][0], scaling["batch_size"], "batch size", log=True)
        curves(axes[1][1], scaling["threads"], "threads (DALI threads, DataLoader workers, torch threads)")
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)


def colour(stage: str) -> str:
    return next((v for k, v in COLOURS.items() if stage.endswith(k)), COLOURS["model"])


def spread(figures: list) -> tuple:
    """The medians, and their distances down to the min and up to the max (matplotlib's yerr)."""
    medians = [f["median"] for f in figures]
    return medians, [[m - f["min"] for f, m in zip(figures, medians)],
                     [f["max"] - m for f, m in zip(figures, medians)]]


def bars(ax, results: dict, stages: list, title: str, log: bool = False, tax: dict | None = None):
    medians, whiskers = spread([results[k] for k in stages])
    labels = [LABELS[k].replace("  ", "\n").replace(" (", "\n(") for k in stages]
    ax.bar(labels, medians, yerr=whiskers, capsize=4, color=[colour(k) for k in stages])
    for i, (k, m) in enumerate(zip(stages, medians)):
        loader = k.removeprefix("e2e_")
        note = f"\ntax {tax[loader]:.1%}" if tax and loader in tax else ""
        ax.annotate(f"{m:,.0f}{note}", (i, results[k]["max"]), ha="center", va="bottom", xytext=(0, 3),
                    textcoords="offset points", fontsize=8)
    ax.set_yscale("log" if log else "linear")
    ax.margins(y=0.15)
    ax.set_ylabel("images/s (median; whiskers min-max)")
    ax.set_title(title)


def curves(ax, per_loader: dict, xlabel: str, log: bool = False):
    for name, points in per_loader.items():
        xs = sorted(points)
        medians, whiskers = spread([points[x] for x in xs])
        ax.errorbar(xs, medians, yerr=whiskers, capsize=3, marker="o", color=COLOURS[name], label=NAMES[name])
    if log:
        ax.set_xscale("log", base=2)
    ticks = sorted({x for points in per_loader.values() for x in points})
    ax.set_xticks(ticks, [str(x) for x in ticks])
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images/s, loader alone (median; min-max)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8)  # below: no curve hidden
    ax.set_title(f"cost growth: images/s against {xlabel.split(' (')[0]}")
