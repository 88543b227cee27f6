"""bench.png: the stages as bars (median, min-max whiskers), the fast paths when measured, and, after
--scaling, each loader's images/s against batch size and threads; an unreliable figure (verdict.py) is
hatched and labelled so, and the verdicts are printed under the panels. A matplotlib Figure, no pyplot
(no GUI state, safe in any process)."""
import math

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from common.files import atomic_write

from . import fastpaths, report as reports
from .loaders import NAMES
from .stages import LABELS, MODELS, PIPELINES

COLOURS = {"dali": "tab:green", "torch_ops": "tab:blue", "dataloader": "tab:orange", "model": "tab:grey"}


def draw(report: dict, path):
    fast, scaling = (report.get("fast_paths") or {}).get("variants"), report.get("scaling")
    mosaic = [["loaders", "models"]] + [["fast", "fast"]] * bool(fast)
    mosaic += [["batch", "threads"]] * bool(scaling)
    footer = reports.summary_lines(report)
    fig = Figure(figsize=(12, 4.3 * len(mosaic) + 0.2 * len(footer)), layout="constrained")
    axes = fig.subplot_mosaic(mosaic)
    dev, c = report["device"], report["config"]
    fig.suptitle(f"{c['model']}, batch {c['batch_size']}, {c['precision']} | {dev['type']}: {dev['name']} "
                 f"({dev['cores']} cores) | threads {c['threads']}")
    res, taxes = report["results"], report["verdicts"]["taxes"]
    bars(axes["loaders"], {LABELS[k]: res[k] for k in PIPELINES}, [colour(k) for k in PIPELINES],
         "each loader alone", log=True)
    notes = [""] + [f"tax {taxes[k]['value']:.1%}" + flag(taxes[k]) for k in NAMES]
    bars(axes["models"], {LABELS[k]: res[k] for k in MODELS}, [colour(k) for k in MODELS],
         "training step: alone and fed by each loader", notes=notes)
    if fast:
        base = next((k for k in fast if k == f"{c['precision']}:eager"), next(iter(fast)))
        bars(axes["fast"], {fastpaths.label(k): f for k, f in fast.items()}, ["tab:purple"] * len(fast),
             "the training step alone, each fast path",
             notes=[fast_note(f, fast[base], base) for f in fast.values()])
    if scaling:
        curves(axes["batch"], scaling["batch_size"], "batch size", log=True)
        curves(axes["threads"], scaling["threads"],
               "threads (DALI threads, DataLoader workers, torch threads)")
    fig.supxlabel("\n".join(footer), fontsize=8, ha="left", x=0.01)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)


def colour(stage: str) -> str:
    return next((v for k, v in COLOURS.items() if stage.endswith(k)), COLOURS["model"])


def flag(t: dict) -> str:
    return " IMPOSSIBLE" if t["impossible"] else ", unreliable" if t["unreliable"] else ""


def fast_note(f: dict, base: dict, base_name: str) -> str:
    """Speed against the run's own precision in eager mode, warm-up (compile) time, peak GPU memory."""
    memory = "" if f["gpu_peak_mb"] is None else f", {f['gpu_peak_mb']:,.0f} MB"
    return (f"{f['median'] / base['median']:.2f}x {base_name.replace(':', ' ')}\n"
            f"warm-up {f['warmup_seconds']:.0f} s{memory}")


def spread(figures: list) -> tuple:
    """The medians, and their distances down to the min and up to the max (matplotlib's yerr)."""
    medians = [f["median"] for f in figures]
    return medians, [[m - f["min"] for f, m in zip(figures, medians)],
                     [f["max"] - m for f, m in zip(figures, medians)]]


def bars(ax, stages: dict, colours: list, title: str, log: bool = False, notes: list | None = None):
    """One bar per stage {label: figures}; an unreliable one hatched, and said so above it."""
    figures = list(stages.values())
    medians, whiskers = spread(figures)
    labels = [k.replace("  ", "\n").replace(" (", "\n(").replace(", ", ",\n") for k in stages]
    drawn = ax.bar(labels, medians, yerr=whiskers, capsize=4, color=colours)
    for i, (f, bar) in enumerate(zip(figures, drawn)):
        note = f"\n{notes[i]}" if notes and notes[i] else ""
        if f["unreliable"]:
            bar.set(hatch="//", alpha=0.45)
            note += "\nUNRELIABLE"
        ax.annotate(f"{f['median']:,.0f}{note}", (i, f["max"]), ha="center", va="bottom", xytext=(0, 3),
                    textcoords="offset points", fontsize=8, color="tab:red" if f["unreliable"] else "black")
    if log:
        log_axis(ax, min(f["min"] for f in figures), max(f["max"] for f in figures))
    else:
        ax.margins(y=0.35)
    ax.set_ylabel("images/s (median; whiskers min-max)")
    ax.set_title(title)


def log_axis(ax, low: float, high: float):
    """A log axis from the decade below the lowest figure to well above the highest (room for the labels
    above the bars), ticks at 1, 2 and 5 of each decade labelled 1k, 2k, 5k: a bar on a log axis
    starts at the axis's bottom, so an automatic one can cut the shortest bar off."""
    ax.set_yscale("log")
    ax.set_ylim(10 ** math.floor(math.log10(low)), high * 6)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: short(y)))
    ax.yaxis.set_minor_formatter(NullFormatter())


def short(y: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if y >= size:
            return f"{y / size:g}{suffix}"
    return f"{y:g}"


def curves(ax, per_loader: dict, xlabel: str, log: bool = False):
    for name, points in per_loader.items():
        xs = sorted(points)
        medians, whiskers = spread([points[x] for x in xs])
        ax.errorbar(xs, medians, yerr=whiskers, capsize=3, marker="o", color=COLOURS[name], label=NAMES[name])
    if log:
        ax.set_xscale("log", base=2)
    ticks = sorted({x for points in per_loader.values() for x in points})
    ax.set_xticks(ticks, [str(x) for x in ticks])
    every = [f for points in per_loader.values() for f in points.values()]
    log_axis(ax, min(f["min"] for f in every), max(f["max"] for f in every) / 3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images/s, loader alone (median; min-max)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8)  # below: no curve hidden
    ax.set_title(f"cost growth: images/s against {xlabel.split(' (')[0]}")
