"""What the figures allow one to say. A stage is unreliable when other processes used more than
machine.LOAD_LIMIT cores during its timed runs, or its runs spread more than SPREAD_LIMIT (max / min);
a comparison of two stages is then no verdict. Otherwise A beats B only when the runs' ranges are apart
(A's slowest run above B's fastest): a margin inside the spread is a tie. A data-loading tax below zero
beyond the spread and below -3 % (end to end faster than the model alone) is impossible and said so:
one of its stages was slowed by something, seen by the load sampler or not."""
from .machine import LOAD_LIMIT

SPREAD_LIMIT = 2.0  # max / min of a stage's runs; quiet runs on 2 shared cores spread up to ~1.45
TAX_FLOOR = -0.03  # taxes within +-3 % are step-to-step noise on quiet cores; below this one is impossible


def reasons(figures: dict) -> list:
    """Why a stage's figure cannot be trusted ([]: nothing found)."""
    found = []
    others = figures.get("others_cores")
    if others is not None and others > LOAD_LIMIT:
        before, after = figures.get("load_average") or (None, None)
        found.append(f"other processes used {others:.2f} cores during its runs"
                     + (f" (load average {before:.2f} -> {after:.2f})" if before is not None else ""))
    if figures["min"] > 0 and figures["max"] / figures["min"] > SPREAD_LIMIT:
        found.append(f"its runs spread {figures['max'] / figures['min']:.1f}x (max / min)")
    return found


def compare(a: dict, b: dict, a_name: str, b_name: str) -> dict:
    """a's images/s against b's: the ratio of the medians, its range over the runs, whether the ranges
    are apart, and the reasons not to trust it (either stage's)."""
    doubts = [f"{name}: {why}" for name, f in ((a_name, a), (b_name, b)) for why in f.get("unreliable", [])]
    low, high = a["min"] / b["max"], a["max"] / b["min"]
    return dict(ratio=a["median"] / b["median"], low=low, high=high, beyond_spread=low > 1 or high < 1,
                reliable=not doubts, unreliable=doubts)


def word(c: dict) -> str:
    """A comparison in a word: UNRELIABLE, tie (within the runs' spread), faster or slower (beyond it)."""
    if not c["reliable"]:
        return "UNRELIABLE"
    if not c["beyond_spread"]:
        return "tie"
    return "faster" if c["ratio"] > 1 else "slower"


def doubts(found: dict, why: bool) -> str:
    """The reasons not to trust a figure, or (why=False, for a picture) where to find them."""
    return "; ".join(found["unreliable"]) if why else "see the hatched bars; the reasons are in the JSON"


def said(c: dict, a_name: str, b_name: str, why: bool = True) -> str:
    """One line for a comparison: the ratio and what it allows one to say."""
    figure = f"{a_name} / {b_name} {c['ratio']:.2f}x ({c['low']:.2f} - {c['high']:.2f} over the runs)"
    if not c["reliable"]:
        return f"{figure}: UNRELIABLE, no verdict ({doubts(c, why)})"
    if not c["beyond_spread"]:
        return f"{figure}: a tie within the runs' spread"
    return f"{figure}: {a_name if c['ratio'] > 1 else b_name} is faster, beyond the runs' spread"


def tax(e2e: dict, ceiling: dict, loader: str) -> dict:
    """1 - end to end / model only, from the medians; impossible below TAX_FLOOR when the end-to-end
    runs all beat the model-alone runs (feeding the model cannot make it faster)."""
    value = 1 - e2e["median"] / ceiling["median"]
    doubts = [f"{who}: {why}" for who, f in ((f"end-to-end {loader}", e2e), ("model only", ceiling))
              for why in f.get("unreliable", [])]
    impossible = value < TAX_FLOOR and e2e["min"] > ceiling["max"]
    return dict(value=value, reliable=not doubts and not impossible, impossible=impossible, unreliable=doubts)


def tax_said(t: dict, loader: str, why: bool = True) -> str:
    line = f"data-loading tax, {loader}: {t['value']:.1%}"
    if t["impossible"]:
        return (f"{line}: IMPOSSIBLE (every end-to-end run beat every model-only run): not a figure, "
                "something slowed the model-only runs; measure again on a quiet machine")
    if t["unreliable"]:
        return f"{line}: UNRELIABLE ({doubts(t, why)})"
    return line


def choose(options: dict, current: str) -> dict:
    """The default a run's figures would pick among options {name: figures}: the fastest, where it beats
    the current default beyond the runs' spread on reliable figures; else the current default stays.
    The margin is the fastest against the current default (or, when they are one, the runner-up)."""
    ranked = sorted(options, key=lambda k: options[k]["median"], reverse=True)
    best = ranked[0]
    against = current if current in options and current != best else next(iter(ranked[1:]), None)
    if against is None:
        return dict(choice=current, fastest=best, against=None, margin=None, beyond_spread=False,
                    reliable=False, unreliable=["one option measured: nothing to compare"], current=current)
    c = compare(options[best], options[against], best, against)
    decided = c["reliable"] and c["beyond_spread"]
    return dict(choice=best if decided else current, fastest=best, against=against, margin=c["ratio"] - 1,
                beyond_spread=c["beyond_spread"], reliable=c["reliable"], unreliable=c["unreliable"],
                current=current)


def choice_said(what: str, c: dict, why: bool = True) -> str:
    if c["against"] is None:
        return f"{what}: keep {c['current']} (only {c['fastest']} measured: nothing to compare)"
    margin = f"{c['fastest']} {c['margin']:+.1%} over {c['against']}"
    if not c["reliable"]:
        return f"{what}: keep {c['current']} ({margin}, UNRELIABLE: {doubts(c, why)})"
    if not c["beyond_spread"]:
        return f"{what}: keep {c['current']} ({margin}, within the runs' spread)"
    return f"{what}: {c['choice']} ({margin}, beyond the runs' spread)"
