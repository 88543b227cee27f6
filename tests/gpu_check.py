#!/usr/bin/env python3
"""Check every GPU claim: the environment and every GPU test, the default 20-epoch run, the benchmark
that decides the defaults, and a killed-and-resumed short run with viz. Results go to a JSON file (and
each step's log) as they come, and to a table.

    make gpu-check                                  # on a CUDA machine (.venv), data in ./data
    make gpu-check ARGS=--smoke                     # the same sequence, tiny, on the CPU (CI runs it)
    python3 tests/gpu_check.py --data-dir /tmp/cifar --only env,tests

Steps, most valuable first (`--only` picks some; each is time-boxed, recorded, and a failure does not
stop the next):
  env    GPU, driver, CUDA, torch (found, and the pin), DALI (wheel, CUDA major), grad-cam (imported),
         what torch.compile lacks; every step's record and row is labelled with the torch found
  tests  `pytest -m gpu` over every test module with gpu-marked tests: passed / failed / skipped
  full   train.py with its defaults (ResNet18, 20 epochs, the full set): wall time, img/s, final accuracy
  bench  bench.py --data-dir DIR with its defaults: its whole JSON (loaders, fast paths, chosen defaults)
  short  train.py 2 epochs on 10,240 images, SIGKILLed once epoch 1's checkpoint exists, resumed with
         --resume, then viz.py on its last.pt: img/s, accuracies
The JSON file (--json) is rewritten whenever a step starts a command, every few seconds while it runs
(the epochs of a training run so far) and when it ends, and a step's log (--logs) grows as it runs: a
command stopped from outside still leaves what it did. Calls merge their steps into the same file. Exit
code 1 if a step of this call failed or ran out of time, 2 for bad input.

On a bare GPU machine (Python and a CUDA torch, no DALI or grad-cam, no network; files reach it in
copies of at most 64 MiB, it is released after 30 s idle), docs/gpu.md has the plan; in short:
 1. Where pip reaches the package index:  make gpu-kit
    -> .gpu-kit/parts/part-00 .. part-NN (each fits one copy beside the repository) and SHA256SUMS:
       DALI for the target's CUDA major and Python with its dependencies, pruned (offline/prune.py),
       grad-cam and its ttach, and the CIFAR-10 JPEG archive.
 2. One call per part, copying it into /tmp/kit-parts/; the last also installs the kit
    (python3 -m offline install /tmp/kit-parts /tmp/kit: packages in /tmp/kit/site, CIFAR-10 in
    /tmp/kit/cifar) and runs env and tests; then one call per group. Each call writes its results into a
    local folder first and copies it into the folder that comes back at its end; each step's box, the
    check's `timeout` and the call's limit nest, so that the check's own SIGTERM ends a step:
      python3 tests/gpu_check.py --recipe N      # the calls for a kit of N parts: copies, commands, minutes
 3. Put the figures, labelled with the device and the torch version found, into BENCHMARKS.md.
"""
import argparse
import contextlib
import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from tests/: the project's common/ (no torch, no DALI)

from common import cli  # noqa: E402
from common.cli import Parser, UsageError  # noqa: E402
from common.files import write_text  # noqa: E402
from common.tables import markdown, row  # noqa: E402

STEPS = ("env", "tests", "full", "bench", "short")  # most valuable first
# Expected minutes on an H200 (not yet measured: docs/gpu.md says how each is reckoned) and the time
# boxes, in seconds: about twice the expectation. The bench box is larger: bench.py sizes its GPU run to
# about 3 minutes, and each of its two compiled variants compiles cold (its own Inductor cache) for
# up to a minute more; the variants run most valuable first, so a box that ends early cuts the least.
EXPECTED_MINUTES = {"env": 0.3, "tests": 2.5, "full": 1.5, "bench": 3.0, "short": 1.0}
GPU_LIMITS = {"env": 90, "tests": 270, "full": 300, "bench": 360, "short": 150}
PROGRESS_SECONDS = 5  # how often a running step's record is rewritten
SMOKE_LIMIT = 900  # per step on a CPU: generous, so that a loaded CI machine never trips it
# For tests of the check itself: steps named here get a --data-dir that does not exist, so they fail.
MISSING_DATA_VAR = "GPU_CHECK_MISSING_DATA"
TAIL_CHARS = 3000
SLOWEST = 5  # the tests step records this many of its slowest tests with their seconds


class StepFailed(Exception):
    pass


class StepTimeout(Exception):
    pass


class Stopped(Exception):
    """SIGTERM or SIGINT, e.g. from an outer time limit: the running step is killed and recorded."""


class StopSignals:
    """SIGTERM and SIGINT raise Stopped, except while a child is being started: then the signal waits
    until the child is recorded, so that the step's clean-up sees it and kills it (a signal between
    Popen and its recording left train.py running unseen)."""

    def __init__(self):
        self.holding, self.pending = False, None

    def handle(self, signum, frame):
        if self.holding:
            self.pending = signum
        else:
            raise Stopped(f"stopped by signal {signum}")

    @contextlib.contextmanager
    def held(self):
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        signum, self.pending = self.pending, None
        if signum is not None:
            raise Stopped(f"stopped by signal {signum}")


SIGNALS = StopSignals()


# ------------------------------------------------------------- the plan on a bare GPU machine
# One call per kit part, back to back (a machine idle for 30 s is released, with all it holds): the last
# part's call also installs the kit and runs the first group; then one call per group. Each call leaves
# its results in RESULTS and copies them into $OUT (emptied before each call, copied back after it).
GROUPS = (("env", "tests"), ("full",), ("bench",), ("short",))
DEVICE_MINUTES = 15        # all calls together, the machine's start included
START_MINUTES = 1.5        # the machine's start
CALL_MINUTES = 0.2         # a call's own cost: the copy of up to 64 MiB there, the results back
INSTALL_MINUTES = 1.0      # verify, unpack, pip install, convert 60,000 JPEGs, probe
INSTALL_LIMIT = 180        # seconds: the installer's `timeout`
MARGIN = 30                # seconds from a step's boxes to the check's `timeout`, and from that to the call's limit
RESULTS = "/tmp/gpu-results"
PARTS, KIT = "/tmp/kit-parts", "/tmp/kit"


def recipe(parts: int) -> list:
    """The calls for a kit of `parts` parts: {copied, what, command, minutes, limit}; limit is the call's
    own (seconds), past the `timeout`s inside it."""
    check = (f"PYTHONPATH={KIT}/site timeout {{inner}} python3 tests/gpu_check.py --data-dir {KIT}/cifar "
             f"--out /tmp/gpu-check --json {RESULTS}/gpu-check.json --logs {RESULTS}/logs --only {{only}}")
    back = f'; rc=$?; cp -r {RESULTS}/. "$OUT"/; exit $rc'
    calls = [dict(copied=f".gpu-kit/parts/part-{i:02d}", what=f"copy part {i:02d}", minutes=CALL_MINUTES, limit=60,
                  command=f"mkdir -p {PARTS} && cp .gpu-kit/parts/part-{i:02d} {PARTS}/") for i in range(parts - 1)]
    for n, group in enumerate(GROUPS):
        inner = sum(GPU_LIMITS[s] for s in group) + MARGIN
        command = f"mkdir -p {RESULTS} && " + check.format(inner=inner, only=",".join(group))
        minutes, copied, what = CALL_MINUTES + sum(EXPECTED_MINUTES[s] for s in group), "", ""
        if n == 0:  # the last part's call: it installs the kit first
            last = f".gpu-kit/parts/part-{parts - 1:02d}"
            command = (f"mkdir -p {PARTS} {RESULTS} && cp {last} .gpu-kit/parts/SHA256SUMS {PARTS}/ && timeout "
                       f"{INSTALL_LIMIT} python3 -m offline install {PARTS} {KIT} > {RESULTS}/install.log 2>&1 && "
                       + command.split(" && ", 1)[1])
            copied, what = f"{last}, .gpu-kit/parts/SHA256SUMS", f"copy part {parts - 1:02d}, install the kit, "
            minutes, inner = minutes + INSTALL_MINUTES, inner + INSTALL_LIMIT
        calls.append(dict(copied=copied, what=what + f"check {', '.join(group)}", command=command + back,
                          minutes=round(minutes, 2), limit=inner + MARGIN))
    return calls


def recipe_text(parts: int) -> str:
    """The calls' commands, then a table of them with the start and the total expected minutes."""
    calls = recipe(parts)
    commands = "\n".join(f"# {i}: {c['what']} (limit {c['limit']} s)\n{c['command']}" for i, c in enumerate(calls, 1))
    rows = [["0", "(the machine starts)", "-", f"{START_MINUTES}", ""]]
    rows += [[str(i), c["copied"] or "-", c["what"], f"{c['minutes']}", str(c["limit"])]
             for i, c in enumerate(calls, 1)]
    total = START_MINUTES + sum(c["minutes"] for c in calls)
    rows.append(["", "total", "", f"{total:.1f} of {DEVICE_MINUTES}", ""])
    return (f"```sh\n{commands}\n```\n\n"
            + markdown(["call", "copied besides the repository", "what runs", "expected min", "limit s"], rows))


# --------------------------------------------------------------------------- command line
def parse(argv) -> argparse.Namespace:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # the recipe too
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (no GPU needed)")
    p.add_argument("--data-dir", type=Path, help="CIFAR-10 (cifar-10-batches-py/ or the store); "
                   "default ./data, with --smoke a tiny synthetic set written under --out")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check",
                   help="work folder: runs, data for --smoke (default runs/gpu-check)")
    p.add_argument("--json", type=Path, default=ROOT / "gpu-check.json",
                   help="results, merged with what the file already holds, rewritten as they come "
                        "(default gpu-check.json)")
    p.add_argument("--logs", type=Path, help="each step's log, written as it runs (default: logs/ in --out)")
    p.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps (default {','.join(STEPS)})")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for every child process (default: this one)")
    p.add_argument("--recipe", type=int, metavar="PARTS",
                   help="print the calls for a bare GPU machine and a kit of PARTS parts (docs/gpu.md), and exit")
    args = p.parse_args(argv)
    args.steps = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown or not args.steps:
        raise UsageError(f"--only {args.only!r}: steps are {', '.join(STEPS)}")
    if args.recipe is not None and args.recipe < 1:
        raise UsageError(f"--recipe {args.recipe}: a kit has at least one part (make gpu-kit says how many)")
    if shutil.which(args.python) is None:
        raise UsageError(f"--python {args.python}: not an executable; give the interpreter that has torch")
    return args


# ------------------------------------------------------------------------- running things
class Step:
    """One step's running record: its log file, its deadline, the commands it ran and its figures.
    progress() is called whenever a command starts and every PROGRESS_SECONDS while one runs; a step
    sets watch to refresh its figures from what its command wrote so far."""

    def __init__(self, name: str, limit: float, logs: Path, env: dict, progress=lambda: None):
        self.name, self.limit, self.env, self.progress = name, limit, env, progress
        self.deadline = time.monotonic() + limit
        self.log = logs / f"{name}.log"
        self.log.write_text("")
        self.commands, self.figures = [], {}
        self.running, self.watch = None, lambda: None

    def start(self, command) -> subprocess.Popen:
        command = [str(c) for c in command]
        with SIGNALS.held(), open(self.log, "a") as log:
            self.commands.append({"command": shlex.join(command), "exit": None, "seconds": None})
            self._started = time.monotonic()
            self.progress()  # the results file says it runs before the log does (a reader may go by the log)
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            # Own process group: a timeout kills torchrun's workers and DALI's threads with it.
            self.running = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)
        return self.running

    def run(self, command):
        proc = self.start(command)
        self.wait(proc)
        if proc.returncode != 0:
            raise StepFailed(f"{self.last} exited {proc.returncode}: {self.last_line()}")

    @property
    def last(self) -> str:
        """The last command, short: its script (train.py), module (pytest) or `python -c`."""
        command = shlex.split(self.commands[-1]["command"])
        return {"-m": command[2], "-c": "python -c"}.get(command[1], Path(command[1]).name)

    def last_line(self) -> str:
        """What a failing command said last: the scripts' one-line errors end their output."""
        lines = [line for line in self.tail().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no output"

    def wait(self, proc: subprocess.Popen):
        try:
            while not self.waited(proc, PROGRESS_SECONDS):
                if time.monotonic() >= self.deadline:
                    kill(proc)
                    raise StepTimeout(f"{self.name} ran past its {self.limit:.0f} s time box in: {self.last}")
                self.report()
        finally:
            self.ended(proc)

    def waited(self, proc: subprocess.Popen, seconds: float) -> bool:
        """Whether proc ended within `seconds` (never past the deadline)."""
        try:
            proc.wait(timeout=max(min(seconds, self.deadline - time.monotonic()), 0))
            return True
        except subprocess.TimeoutExpired:
            return False

    def report(self):
        """Fresh figures (what the command wrote so far) into the record on disk."""
        with contextlib.suppress(Exception):  # a half-written file now is a whole one next time
            self.watch()
        self.progress()

    def ended(self, proc: subprocess.Popen):
        self.commands[-1].update(exit=proc.returncode, seconds=round(time.monotonic() - self._started, 1))

    def wait_for_file(self, path: Path, proc: subprocess.Popen):
        """Until `path` exists while `proc` still runs: a state, polled, never a guessed sleep."""
        reported = time.monotonic()
        while not path.exists():
            if time.monotonic() - reported > PROGRESS_SECONDS:
                self.report()
                reported = time.monotonic()
            if proc.poll() is not None:
                self.ended(proc)
                raise StepFailed(f"{self.last} exited {proc.returncode} before writing {path.name}: "
                                 f"{self.last_line()}")
            if time.monotonic() > self.deadline:
                kill(proc)
                self.ended(proc)
                raise StepTimeout(f"{self.name} ran past its {self.limit:.0f} s time box waiting for {path}")
            time.sleep(0.01)

    def stop_running(self):
        """However the step ended, leave no child behind (its own session would outlive us)."""
        if self.running is not None and self.running.poll() is None:
            kill(self.running)
            self.ended(self.running)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-TAIL_CHARS:]


def kill(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended by itself in the meantime
    proc.wait()


# ---------------------------------------------------------------------------- the steps
class Check:
    """What every step needs: the interpreter, the data, the sizes for a GPU or a smoke run."""

    def __init__(self, args):
        self.smoke = args.smoke
        self.python, self.torch = args.python, args.torch
        self.out = args.out.resolve()
        self.device = "cpu" if self.smoke else "cuda"
        self.data_dir = args.data_dir.resolve() if args.data_dir else None
        self.missing_data = set(os.environ.get(MISSING_DATA_VAR, "").split(",")) - {""}

    def data_for(self, step: str) -> str:
        return str(self.out / "no-such-data" if step in self.missing_data else self.data_dir)

    def fresh(self, name: str) -> Path:
        """The step's own run folder, emptied: train.py refuses a folder that already holds a run."""
        folder = self.out / name
        shutil.rmtree(folder, ignore_errors=True)
        return folder

    def train(self, step: str, out: Path, *flags):
        return [self.python, "train.py", "--device", self.device, "--data-dir", self.data_for(step),
                "--out", out, *flags]

    # Sizes: the GPU runs are the issue's; the smoke runs are the smallest that still run every line.
    def short_sizes(self):
        if self.smoke:
            return ["--limit-train", "64", "--limit-test", "64", "--batch-size", "32"]
        return ["--limit-train", "10240"]

    def viz_sizes(self):
        return (["--limit-test", "64", "--method", "gradcam", "--n", "4", "--faithfulness-images", "4",
                 "--sanity-images", "2"] if self.smoke else [])

    def full_sizes(self):
        if self.smoke:
            return ["--epochs", "1", "--limit-train", "48", "--limit-test", "32", "--batch-size", "16"]
        return []  # the defaults: ResNet18, 20 epochs, batch 512, the whole set

    def bench_sizes(self, step):
        if not self.smoke:
            return ["--data-dir", self.data_for(step)]  # its GPU defaults: sized for about 3 minutes
        data = ["--data-dir", self.data_for(step)] if step in self.missing_data else ["--synthetic", "48"]
        return ["--device", "cpu", *data, "--batch-size", "16", "--repeats", "1", "--warmup", "0",
                "--model-steps", "1", "--workers", "0"]


# What the environment step records (printed as one JSON line).
PROBE = r"""
import importlib.metadata as md, json, platform, re
import torch
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
names = sorted({d.metadata["Name"] for d in md.distributions()})
dali = [n for n in names if re.fullmatch(r"nvidia[-_]dali[-_]cuda\d+0", n.lower())]
cuda = torch.cuda.is_available()
info = dict(python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if cuda else None, cuda_available=cuda,
            gpu=torch.cuda.get_device_name(0) if cuda else None, gpu_count=torch.cuda.device_count(),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
            gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
            dali_wheels=dali, dali=version(dali[0]) if dali else None, grad_cam=version("grad-cam"),
            torchvision=version("torchvision"), numpy=version("numpy"), xdist=version("pytest-xdist"))
pins = dict(re.findall(r"^([\w.-]+)==(\S+)", open("requirements.txt").read(), re.MULTILINE))
info["torch_pinned"] = pins.get("torch")  # the machine's own torch may differ: every figure says which ran
from common.device import compile_problem  # the project's own rule (cwd is the repository)
info["compile_problem"] = compile_problem("cuda" if cuda else "cpu")
try:  # both, now: a missing grad-cam would otherwise surface as pytest's exit 2 with no GPU test run
    import nvidia.dali
    import pytorch_grad_cam
    info["import_error"] = None
except Exception as e:
    info["import_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(info))
"""


def torch_found(python: str, env: dict) -> tuple:
    """(the interpreter's torch version, whether it sees a GPU); bad input (exit 2) if it cannot even
    import torch. Every step's record is labelled with that version: the GPU machine's own torch is not
    always the one requirements.txt pins."""
    proc = subprocess.run([python, "-c", "import torch; print(torch.__version__, torch.cuda.is_available())"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"{python} cannot import torch ({last}): pass --python, or set PYTHONPATH "
                         "(/tmp/site after the GPU kit's install.sh)")
    version, cuda = proc.stdout.split()[-2:]
    return version, cuda == "True"


def nvidia_smi() -> dict:
    if shutil.which("nvidia-smi") is None:
        return {"driver": None, "driver_cuda": None}
    query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
    banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60).stdout
    name, driver, memory = (query.stdout.splitlines() or [",,"])[0].split(", ")[:3]
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", banner)
    return {"smi_gpu": name, "driver": driver, "smi_memory": memory, "driver_cuda": cuda and cuda.group(1)}


def step_env(check: Check, step: Step):
    proc = step.start([check.python, "-c", PROBE])
    step.wait(proc)
    if proc.returncode != 0:
        raise StepFailed(f"the environment probe exited {proc.returncode}: {step.last_line()}")
    info = {**json.loads(step.log.read_text().strip().splitlines()[-1]), **nvidia_smi()}
    step.figures.update(info)
    problems = []
    if len(info["dali_wheels"]) != 1:
        problems.append(f"expected one nvidia-dali-cuda* wheel, found {info['dali_wheels'] or 'none'}")
    elif info["torch_cuda"]:
        dali_major = int(re.search(r"cuda(\d+)0$", info["dali_wheels"][0].lower()).group(1))
        step.figures["cuda_major_match"] = dali_major == int(info["torch_cuda"].split(".")[0])
        if not step.figures["cuda_major_match"]:
            problems.append(f"{info['dali_wheels'][0]} beside torch for CUDA {info['torch_cuda']}")
    if info["import_error"]:
        problems.append(f"import failed: {info['import_error']}")
    if not check.smoke and not info["cuda_available"]:
        problems.append("torch sees no CUDA device")
    if problems:
        raise StepFailed("; ".join(problems))


def step_tests(check: Check, step: Step):
    report = check.out / "tests.xml"
    report.unlink(missing_ok=True)
    modules = gpu_test_modules()
    # On a GPU four workers share it (the compile test alone takes about a minute); -v: each result in the log.
    workers = ["-n", "4"] if not check.smoke and has_module(check.python, "xdist", step.env) else []
    step.figures["modules"] = modules
    proc = step.start([check.python, "-m", "pytest", "-m", "gpu", *modules, "-v", "-rs", *workers,
                       f"--junitxml={report}"])
    step.wait(proc)
    if not report.exists():
        raise StepFailed(f"{step.last} exited {proc.returncode} without a report")
    step.figures.update(junit_counts(report.read_text()))
    if proc.returncode != 0 or step.figures["failed"]:
        raise StepFailed(f"{step.figures['failed']} gpu tests failed (exit {proc.returncode}): "
                         f"{', '.join(step.figures['failures']) or 'none collected'}")
    if step.figures["passed"] == 0:
        return "skipped"  # every test skipped (no CUDA): nothing was verified, and the record says so


def gpu_test_modules() -> list:
    """The test modules that hold gpu-marked tests: only they are imported, so a module whose imports the
    GPU machine lacks (a notebook kernel, a database) cannot stop the GPU tests."""
    return [f"tests/{p.name}" for p in sorted((ROOT / "tests").glob("test_*.py")) if "mark.gpu" in p.read_text()]


def has_module(python: str, name: str, env: dict) -> bool:
    return subprocess.run([python, "-c", f"import {name}"], cwd=ROOT, env=env, capture_output=True,
                          timeout=120).returncode == 0


def junit_counts(xml: str) -> dict:
    """passed / failed / skipped, the failing test names, the skip reasons and the slowest tests (the
    compile test's seconds: what the bench box has to allow per compiled variant), from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET
    failed, skipped, passed = [], [], 0
    cases = list(ET.fromstring(xml).iter("testcase"))
    slowest = sorted(cases, key=lambda c: -float(c.get("time", 0)))[:SLOWEST]
    for case in cases:
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(case.get("name"))
        elif case.find("skipped") is not None:
            skipped.append(case.find("skipped").get("message", ""))
        else:
            passed += 1
    return {"passed": passed, "failed": len(failed), "skipped": len(skipped), "failures": failed,
            "skip_reasons": sorted(set(skipped)),
            "slowest": {c.get("name"): round(float(c.get("time", 0)), 1) for c in slowest}}


def step_short(check: Check, step: Step):
    out = check.fresh("short")
    proc = step.start(check.train("short", out, "--epochs", "2", *check.short_sizes()))
    # last.pt appears (written whole, then renamed) at the end of epoch 1: kill during epoch 2.
    step.wait_for_file(out / "last.pt", proc)
    if proc.poll() is not None:
        step.ended(proc)
        raise StepFailed(f"train.py ended (exit {proc.returncode}) before the kill: nothing to resume")
    kill(proc)
    step.ended(proc)
    step.run([check.python, "train.py", "--resume", out / "last.pt"])
    rows = read_metrics(out / "metrics.csv")
    if [r["epoch"] for r in rows] != [1, 2]:
        raise StepFailed(f"after the resume metrics.csv holds epochs {[r['epoch'] for r in rows]}, not [1, 2]")
    step.figures.update(epochs=rows, img_s=rows[-1]["img_s"], test_acc=rows[-1]["test_acc"])
    step.run([check.python, "viz.py", "--checkpoint", out / "last.pt", "--out", out / "viz",
              "--device", check.device, *check.viz_sizes()])
    summary = json.loads((out / "viz" / "summary.json").read_text())
    step.figures.update(viz_accuracy=summary["accuracy"], viz_test_images=summary["test_images"],
                        viz_faithfulness=summary.get("faithfulness"))


def read_metrics(path: Path) -> list:
    with open(path, newline="") as f:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in r.items() if v != ""}
                for r in csv.DictReader(f)]


def step_bench(check: Check, step: Step):
    report = check.out / "bench.json"
    report.unlink(missing_ok=True)
    step.watch = lambda: step.figures.update(bench=json.loads(report.read_text()))  # bench.py writes as it goes
    proc = step.start([check.python, "bench.py", *check.bench_sizes("bench"), "--json", report])
    step.wait(proc)
    if report.exists():  # also after a failed stage: bench.py writes the figures it has
        step.figures["bench"] = json.loads(report.read_text())
    if proc.returncode != 0:
        raise StepFailed(f"{step.last} exited {proc.returncode}: {step.last_line()}")


def step_full(check: Check, step: Step):
    out = check.fresh("full")
    started = time.monotonic()
    step.watch = lambda: step.figures.update(run_figures(out / "metrics.csv", started))  # epochs so far
    step.run(check.train("full", out, *check.full_sizes()))
    step.figures.update(run_figures(out / "metrics.csv", started))


def run_figures(metrics: Path, started: float) -> dict:
    """The run's figures from its metrics.csv: the final epoch's accuracy only (a best-of-epochs would be
    chosen on the test set)."""
    rows = read_metrics(metrics) if metrics.exists() else []
    if not rows:
        return {"wall_seconds": round(time.monotonic() - started, 1), "epochs": 0}
    speeds = sorted(r["img_s"] for r in rows)
    return dict(wall_seconds=round(time.monotonic() - started, 1), epochs=len(rows),
                train_seconds=round(sum(r["seconds"] for r in rows), 1), img_s_median=speeds[len(speeds) // 2],
                final_test_acc=rows[-1]["test_acc"], history=rows)


RUNNERS = {"env": step_env, "tests": step_tests, "short": step_short, "bench": step_bench, "full": step_full}


def run_step(name: str, check: Check, limit: float, logs: Path, env: dict, save=lambda record: None) -> dict:
    """Run one step; save(record) receives its record as it runs ("running") and once more at the end."""
    started = time.monotonic()
    step = Step(name, limit, logs, env, progress=lambda: save(record(step, check, started, "running")))
    status, error, stopped = "ok", None, False
    try:
        status = RUNNERS[name](check, step) or "ok"
    except Stopped as e:
        status, error, stopped = "timeout", f"{e} during {name} (an outer time limit?)", True
    except StepTimeout as e:
        status, error = "timeout", str(e)
    except StepFailed as e:
        status, error = "failed", str(e)
    except Exception as e:  # a bug or a surprise in one step must not cost the others their run
        status, error = "failed", f"{type(e).__name__}: {e}"
    finally:
        step.stop_running()
    result = record(step, check, started, status)
    if error:
        result.update(error=error, tail=step.tail())
    if stopped:
        result["stopped"] = True
    save(result)
    return result


def record(step: Step, check: Check, started: float, status: str) -> dict:
    return {"status": status, "seconds": round(time.monotonic() - started, 1),
            "mode": "smoke" if check.smoke else "gpu", "torch": check.torch,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "figures": step.figures, "commands": step.commands, "log": str(step.log)}


# ------------------------------------------------------------------------- results
def load_results(path: Path) -> dict:
    if not path.exists():
        return {"steps": {}}
    try:
        results = json.loads(path.read_text())
        assert isinstance(results.get("steps"), dict)
        return results
    except (ValueError, AssertionError, AttributeError):
        raise UsageError(f"{path} is not a gpu-check result file: move it away or pass another --json") from None


def save_results(path: Path, results: dict):
    """Whole or not at all (temp file + rename): the check may be killed at its command's time limit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(results, indent=2) + "\n")


def key_figures(name: str, r: dict) -> str:
    f = r["figures"]
    if r.get("error"):
        return r["error"][:140]
    if r["status"] == "running":
        return "stopped from outside while running: its figures so far are in the JSON"
    if name == "env":
        return (f"{f.get('gpu') or 'no GPU'}, driver {f.get('driver')}, CUDA {f.get('torch_cuda')}, "
                f"torch {f.get('torch')} (pinned {f.get('torch_pinned')}), DALI {f.get('dali')}, "
                f"grad-cam {f.get('grad_cam')}, "
                f"torch.compile: {f.get('compile_problem') or 'can build'}")
    if name == "tests":
        return (f"{f['passed']} passed, {f['failed']} failed, {f['skipped']} skipped "
                f"({len(f['modules'])} modules)")
    if name == "short":
        return (f"epoch 2: {f['img_s']:,.0f} img/s, test acc {f['test_acc']:.2%}; "
                f"viz acc {f['viz_accuracy']:.2%} on {f['viz_test_images']}")
    if name == "bench":
        res, ratios = f["bench"]["results"], f["bench"]["ratios"]
        chosen = ", ".join(f"{k} {v['choice']}" for k, v in (f["bench"].get("recommendation") or {}).items())
        return (f"DALI {res['pipeline_dali']['median']:,.0f}, model {res['model_only']['median']:,.0f}, "
                f"e2e {res['e2e_dali']['median']:,.0f} img/s, tax {ratios['data_loading_tax']:.1%}; "
                f"would choose: {chosen or 'nothing'}")
    return (f"{f['epochs']} epochs in {f['wall_seconds']:.0f} s, {f['img_s_median']:,.0f} img/s, "
            f"final test acc {f['final_test_acc']:.2%}")


def table(results: dict) -> str:
    """One aligned line per recorded step, in the order the steps run."""
    rows = [["step", "mode", "torch", "status", "seconds", "figures"]]
    for name in (s for s in STEPS if s in results["steps"]):
        r = results["steps"][name]
        try:
            figures = key_figures(name, r)
        except (KeyError, TypeError, ValueError) as e:  # a script's output changed: the JSON still has it
            figures = f"in the JSON (no summary: {type(e).__name__} {e})"
        rows.append([name, r["mode"], r.get("torch", "?"), r["status"], f"{r['seconds']:.1f}", figures])
    widths = [max(len(r[i]) for r in rows) for i in range(5)] + [0]  # the figures: as long as they are
    return "\n".join(row(r, widths, first_left=True) for r in rows)


# ---------------------------------------------------------------------------------- main
def prepare(args) -> tuple:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.smoke:
        env["OMP_NUM_THREADS"] = "1"  # two busy threads on a loaded 2-core machine wait on each other
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data_dir is None and args.smoke:
        args.data_dir = smoke_data(args.out / "data")
    elif args.data_dir is None:
        args.data_dir = ROOT / "data"
    if set(args.steps) & {"short", "bench", "full"} and not has_cifar(args.data_dir):  # before torch loads
        raise UsageError(f"no CIFAR-10 in {args.data_dir}: pass --data-dir (/tmp/cifar after the GPU kit's "
                         "install.sh), or put cifar-10-python.tar.gz there")
    args.torch, cuda = torch_found(args.python, env)
    if not cuda and not args.smoke:
        raise UsageError(f"torch in {args.python} sees no CUDA GPU: run this on a GPU machine, or add --smoke "
                         "for the tiny CPU run")
    return Check(args), env


def has_cifar(folder: Path) -> bool:
    return any((folder / name).exists() for name in
               ("cifar10-uint8.npz", "cifar-10-batches-py/data_batch_1", "cifar-10-python.tar.gz"))


def smoke_data(folder: Path) -> Path:
    """A tiny CIFAR-10 in the real cifar-10-batches-py format (the tests' writer), written once."""
    if not has_cifar(folder):
        shutil.rmtree(folder, ignore_errors=True)
        from conftest import write_cifar  # tests/conftest.py, beside this file
        write_cifar(folder, per_batch=20, n_test=64)
    return folder


def main(argv=None) -> int:
    args = parse(argv)
    if args.recipe:
        print(recipe_text(args.recipe))
        return 0
    results = load_results(args.json)
    check, env = prepare(args)
    logs = args.logs or check.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    statuses = []
    signal.signal(signal.SIGTERM, SIGNALS.handle)
    signal.signal(signal.SIGINT, SIGNALS.handle)
    for name in (s for s in STEPS if s in args.steps):
        print(f"== {name} ...", flush=True)
        limit = SMOKE_LIMIT if args.smoke else GPU_LIMITS[name]
        result = run_step(name, check, limit, logs, env, save=partial(keep, args.json, results, name))
        print(f"== {name}: {result['status']} in {result['seconds']:.1f} s"
              + (f" ({result['error']}; log {result['log']})" if result.get("error") else ""), flush=True)
        statuses.append(result["status"])
        if result.get("stopped"):
            break  # the time is up for the whole check, not only for this step
    print(table(results))
    print(f"results: {args.json}")
    return 1 if {"failed", "timeout"} & set(statuses) else 0


def keep(path: Path, results: dict, name: str, result: dict):
    """The step's record, as it is now, into the results and onto disk."""
    results["steps"][name] = result
    results["updated"] = result["finished"]
    save_results(path, results)


if __name__ == "__main__":
    try:
        cli.run(lambda: sys.exit(main()))
    except Stopped as e:  # between two steps: every finished step is already saved
        print(f"gpu_check: {e}", file=sys.stderr)
        sys.exit(1)
