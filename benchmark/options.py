"""bench.py's options, declared once, checked on construction and frozen (as training's Config): the
training options it shares come from Config (same flag, help and default), the rest are declared here."""
import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from common import cli
from common.cli import UsageError, option
from training import Config

CPU_IMAGES = 10_240  # images per pipeline pass on a CPU: 20 batches of 512
CPU_MODEL_SECONDS = 60  # what the model stages may take on a CPU, the batch chosen to fit (run.py)
SCALING_BATCHES = (128, 256, 512, 1024, 2048)
# The training step's fast paths (fastpaths.py): precisions x torch.compile modes, and the default
# variants, most telling first (a run cut short by its time box keeps those).
PRECISIONS = ("bf16", "fp16", "fp32")
MODES = ("eager", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FAST_PATHS = ("bf16:eager", "fp16:eager", "bf16:reduce-overhead", "bf16:default")


def variant(text: str) -> str:
    """PRECISION:MODE, checked (the option's type)."""
    precision, _, mode = text.partition(":")
    if precision not in PRECISIONS or mode not in MODES:
        raise argparse.ArgumentTypeError(f"expected PRECISION:MODE, PRECISION one of {', '.join(PRECISIONS)} "
                                         f"and MODE one of {', '.join(MODES)}; got {text!r}")
    return text


def training(name: str):
    """Config's field of that name (default, help, choices): the benchmark trains as train.py does."""
    f = next(f for f in dataclasses.fields(Config) if f.name == name)
    return dataclasses.field(default=f.default, metadata=f.metadata)


@dataclass(frozen=True)
class Options:
    data_dir: str = option("data", "CIFAR-10 store folder (run train.py once to fetch it)")
    synthetic: int = option(0, "benchmark on N random uint8 32x32 images instead of CIFAR-10", metavar="N")
    device: str = training("device")
    model: str = training("model")
    batch_size: int = option(0, f"images per batch (default: train.py's {Config.batch_size} on a GPU; on a CPU "
                                f"the largest power of two up to it whose model stages take about "
                                f"{CPU_MODEL_SECONDS} s, from a probe of the step's speed)")
    precision: str = training("precision")
    channels_last: bool = training("channels_last")
    compile: bool = training("compile")
    seed: int = training("seed")
    images: int = option(0, f"images per pipeline pass (default: all on a GPU, {CPU_IMAGES:,} on a CPU)")
    threads: int = option(0, "threads of each loader and of the training step: torch's intra-op threads, "
                             "DALI's threads (at most 4) and, unless --workers, DataLoader workers (default: "
                             "the cores other processes leave free, watched for 0.5 s at the start: more "
                             "threads than free cores stall each other)")
    workers: int | None = option(None, "DataLoader worker processes (default: --threads)", type=int)
    repeats: int = option(3, "timed runs of each stage (median, min, max)")
    warmup: int = option(1, "untimed runs of each pipeline, and untimed training steps before the "
                            "model stages")
    run_seconds: float = option(0.5, "a pipeline-stage run repeats whole passes until it has lasted "
                                     "this long (at least one pass)")
    model_repeats: int = option(0, "timed rounds of the model stages and the fast paths (default: --repeats "
                                   "on a GPU, 2 on a CPU, where a step takes seconds)")
    model_steps: int = option(0, "training steps per model-stage or fast-path run (default: an epoch on a "
                                 "GPU, 1 on a CPU)")
    fast_paths: bool = option(None, "also train the model alone in each of --fast-path-variants and say "
                                    "which precision and compile mode it would choose (default: on a GPU; "
                                    "on a CPU each compiled mode compiles ResNet18 first)")
    fast_path_variants: tuple = option(FAST_PATHS, "PRECISION:MODE pairs for --fast-paths (default "
                                       + " ".join(FAST_PATHS) + "; modes: " + ", ".join(MODES) + ")",
                                       nargs="+", type=variant)
    scaling: bool = option(False, "also measure each loader alone against batch size and threads "
                                  "(minutes more on a CPU)")
    scaling_batches: tuple = option(SCALING_BATCHES, "batch sizes for --scaling (default "
                                    + " ".join(map(str, SCALING_BATCHES)) + ")", nargs="+", type=int)
    stage_timeout: float = option(600.0, "seconds a stage may take in all; past that it fails, named")
    json: str = option("bench.json", "where to write every figure")
    png: str = option("", "where to draw them (default: the --json path with .png)")

    def __post_init__(self):
        problems = [
            (self.batch_size < 0, f"--batch-size must be >= 0 (got {self.batch_size})"),
            (self.synthetic < 0, f"--synthetic must be >= 0 (got {self.synthetic})"),
            (self.images < 0, f"--images must be >= 0 (got {self.images})"),
            (self.threads < 0, f"--threads must be >= 0 (got {self.threads})"),
            (self.workers is not None and self.workers < 0, f"--workers must be >= 0 (got {self.workers})"),
            (self.repeats < 1, f"--repeats must be >= 1 (got {self.repeats})"),
            (self.warmup < 0, f"--warmup must be >= 0 (got {self.warmup})"),
            (self.model_repeats < 0, f"--model-repeats must be >= 0 (got {self.model_repeats})"),
            (self.model_steps < 0, f"--model-steps must be >= 0 (got {self.model_steps})"),
            (self.run_seconds < 0, f"--run-seconds must be >= 0 (got {self.run_seconds})"),
            (self.stage_timeout <= 0, f"--stage-timeout must be > 0 (got {self.stage_timeout})"),
            (min(self.scaling_batches) < 1, "--scaling-batches must all be >= 1"),
        ]
        for bad, message in problems:
            if bad:
                raise UsageError(message)
        for path in (self.json, self.png_path):  # found out now, not after minutes of measuring
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UsageError(f"cannot write {path}: {e.strerror}") from None


    @property
    def png_path(self) -> str:
        return self.png or str(Path(self.json).with_suffix(".png"))


def parse(argv, description: str) -> Options:
    return Options(**cli.parse(Options, argv, description))
