"""What a sweep trains: train.py's options fixed for every trial, a grid over some of them, and seeds.
Each (setting, seed) is a point with its own run directory, named from its values so that a retried
trial finds the directory it started. Values go through train.py's own parser (the argparse metadata
on Config's fields) and every point's Config is built once, so a bad value stops the sweep before any
trial runs."""
import argparse
import dataclasses
import difflib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from common import cli
from common.cli import UsageError
from training import RUNTIME, Config

DEFAULT_VAL_SPLIT = 0.1  # selection needs a validation split; train.py's default is none
# A trial is judged on its final epoch: no best.pt (90-135 MB a trial) unless the fixed options ask for it.
DEFAULTS = {"val_split": DEFAULT_VAL_SPLIT, "keep_best": False}
# Options a sweep sets itself, and what to use instead.
OWNED = {"out": "each trial's run directory is the sweep's (under --out)",
         "resume": "a retried trial resumes from its own last.pt by itself",
         "seed": "seeds are the sweep's --seeds", "find_lr": "a sweep trains; run train.py --find-lr alone"}
TRUE, FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")
# Names people type for train.py's options (other scripts' and papers' spellings), for the hint that a
# misspelt option gets; anything else is matched by spelling alone.
SYNONYMS = {"learning_rate": "lr", "max_lr": "lr", "wd": "weight_decay", "bs": "batch_size", "batch": "batch_size",
            "epoch": "epochs", "n_epochs": "epochs", "opt": "optimizer", "optim": "optimizer", "arch": "model",
            "net": "model", "network": "model", "schedule": "scheduler", "sched": "scheduler",
            "lr_scheduler": "scheduler", "smoothing": "label_smoothing", "amp": "precision", "dtype": "precision",
            "mom": "momentum", "val": "val_split", "validation_split": "val_split"}


class TrainOptions(cli.Parser):
    """train.py's parser, built from Config as train.py builds it; a bad flag raises UsageError without
    cli.Parser's "(see --help)" (the caller adds where it came from and where the options are listed)."""

    def __init__(self):
        super().__init__(prog="train.py", argument_default=argparse.SUPPRESS, add_help=False)
        cli.add_options(self, Config)

    def error(self, message):
        raise UsageError(message)


def flags() -> dict:
    """train.py's options: field name -> Field, for the fields that are flags."""
    return {f.name: f for f in dataclasses.fields(Config) if f.metadata.get("help") is not None}


def shown(value) -> str:
    """A value as it appears in directory names, tables and plots: booleans as on/off."""
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Point:
    setting: dict   # option -> value, in the grid's order
    seed: int

    @property
    def name(self) -> str:
        """The run directory's name, e.g. optimizer=sgd,lr=0.1,seed=2."""
        parts = [*(f"{k}={shown(v)}" for k, v in self.setting.items()), f"seed={self.seed}"]
        return re.sub(r"[^\w.,=+-]", "_", ",".join(parts))

    @property
    def label(self) -> str:
        return " ".join([*(f"{k}={shown(v)}" for k, v in self.setting.items()), f"seed={self.seed}"])


@dataclass(frozen=True)
class Plan:
    name: str
    dir: Path
    grid: dict      # option -> list of values (typed), in the order given
    seeds: int
    fixed: dict     # train.py's options for every trial, as its parser returns them

    def settings(self) -> list:
        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]

    def points(self) -> list:
        """Seed by seed: a sweep stopped early has every setting at least once."""
        return [Point(s, seed) for seed in range(self.seeds) for s in self.settings()]

    def search_space(self) -> dict:
        """Optuna's parameters: the grid and the seed, one more axis."""
        return {**self.grid, "seed": list(range(self.seeds))}

    def point(self, params: dict) -> Point:
        return Point({k: params[k] for k in self.grid}, params["seed"])

    def params(self, point: Point) -> dict:
        return {**point.setting, "seed": point.seed}

    def config(self, point: Point, resume: str = "") -> Config:
        return Config(**self.fixed, **point.setting, seed=point.seed, out=str(self.dir / point.name), resume=resume)

    def definition(self) -> dict:
        """What the trials are (stored in the study, so a second command under the same name must
        agree); where and how each machine runs them (data dir, device) may differ."""
        return {"grid": {k: list(v) for k, v in self.grid.items()}, "seeds": self.seeds,
                "fixed": {k: v for k, v in sorted(self.fixed.items()) if k not in RUNTIME}}

    def to_dict(self) -> dict:
        return {"name": self.name, "dir": str(self.dir), "grid": self.grid, "seeds": self.seeds,
                "fixed": self.fixed}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(d["name"], Path(d["dir"]), d["grid"], d["seeds"], d["fixed"])


def make(name: str, out: str, grid_specs: list, seeds: int, train_argv: list) -> Plan:
    """The checked plan: every point's Config is built here, so any bad value stops the sweep now."""
    if not re.fullmatch(r"[\w.+-]+", name):
        raise UsageError(f"--name {name!r}: use letters, digits and . _ + - (it names a directory and a study)")
    if seeds < 1:
        raise UsageError(f"--seeds {seeds}: a grid of zero trials; give 1 or more (3 for error bars)")
    parser = TrainOptions()
    fixed = fixed_options(parser, train_argv)
    grid = {}
    for spec in grid_specs:
        option, values = grid_option(parser, spec)
        if option in grid or option in fixed:
            raise UsageError(f"--grid {spec}: --{flag(option)} is already "
                             f"{'swept' if option in grid else 'fixed after --'}: give it once")
        grid[option] = values
    plan = Plan(name, Path(out or f"runs/sweeps/{name}"), grid, seeds, {**DEFAULTS, **fixed})
    for point in plan.points():
        check_point(plan, point)
    return plan


def fixed_options(parser: TrainOptions, argv: list) -> dict:
    where = "train.py options after --"
    try:
        parsed, unknown = parser.parse_known_args(argv)
    except UsageError as e:
        raise UsageError(f"{where}: {e} (python train.py --help lists them)") from None
    if unknown:
        first = next((a for a in unknown if a.startswith("-")), unknown[0])
        raise UsageError(f"{where}: unrecognized arguments: {' '.join(unknown)} ({hint(first)})")
    fixed = vars(parsed)
    owned = sorted(fixed.keys() & OWNED.keys())
    if owned:
        raise UsageError(f"--{flag(owned[0])} after --: {OWNED[owned[0]]}")
    return fixed


def grid_option(parser: TrainOptions, spec: str) -> tuple:
    """--grid OPTION=V1,V2,...: (field name, typed values), each value parsed as train.py parses it."""
    text, sep, values = spec.partition("=")
    option = text.strip().lstrip("-").replace("-", "_")
    if not sep or not option:
        raise UsageError(f"--grid {spec}: expected OPTION=V1,V2,... (e.g. --grid lr=0.05,0.1)")
    if option in OWNED:
        raise UsageError(f"--grid {option}: {OWNED[option]}")
    if option not in flags():
        raise UsageError(f"--grid {spec}: train.py has no option --{flag(option)} ({hint(option)})")
    texts = [v.strip() for v in values.split(",") if v.strip()]
    if not texts:
        raise UsageError(f"--grid {spec}: no values, so a grid of zero trials: give one or more")
    typed = [value(parser, option, t) for t in texts]
    repeated = [shown(v) for i, v in enumerate(typed) if v in typed[:i]]
    if repeated:
        raise UsageError(f"--grid {spec}: {repeated[0]} is given twice")
    return option, typed


def hint(option: str) -> str:
    """The option a mistaken name most likely meant: a common synonym (learning_rate: --lr), else the
    nearest spelling."""
    key = option.lower().lstrip("-").replace("-", "_")
    near = SYNONYMS.get(key) or next(iter(difflib.get_close_matches(key, flags(), n=1)), None)
    return f"did you mean --{flag(near)}?" if near else "python train.py --help lists them"


def value(parser: TrainOptions, option: str, text: str):
    """One grid value, through train.py's parser (types, choices); booleans as true/false or on/off."""
    if flags()[option].type in (bool, "bool"):
        if text.lower() not in TRUE + FALSE:
            raise UsageError(f"--grid {option}={text}: --{flag(option)} is a switch: use true or false")
        argv = [f"--{'' if text.lower() in TRUE else 'no-'}{flag(option)}"]
    else:
        argv = [f"--{flag(option)}", text]
    try:
        return getattr(parser.parse_args(argv), option)
    except UsageError as e:
        raise UsageError(f"--grid {option}={text}: {e}") from None


def check_point(plan: Plan, point: Point):
    try:
        cfg = plan.config(point)
    except UsageError as e:
        where = f"the trial {point.label}" if plan.grid else "the options after --"
        raise UsageError(f"{where}: {e}") from None
    if not cfg.val_split:
        raise UsageError("--val-split 0: a sweep chooses on validation accuracy, never the test set's: "
                         f"drop it (the sweep's default is {DEFAULT_VAL_SPLIT}) or give a fraction > 0")


def flag(option: str) -> str:
    return option.replace("_", "-")
