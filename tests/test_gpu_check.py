"""tests/gpu_check.py on the CPU: `--smoke` runs every step tiny and records it, a failing step does not
stop the later ones, calls accumulate in one JSON file, a time box kills its step, bad input is one line
and exit 2. So the GPU check cannot rot between the rare sessions that have a GPU."""
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from tests import gpu_check
from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "gpu_check.py"


def check(*args, env=None):
    # Generous: a loaded 2-core machine must not trip it; the smoke run takes about a minute.
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800, env={**os.environ, **(env or {})})


def said(proc) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One whole smoke run, with the bench step pointed at a missing --data-dir so that it fails."""
    out = tmp_path_factory.mktemp("gpu-check")
    proc = check("--smoke", "--out", out, "--json", out / "gpu-check.json",
                 env={gpu_check.MISSING_DATA_VAR: "bench"})
    return out, proc


def test_smoke_records_every_step_and_the_failure_does_not_stop_the_rest(smoke):
    out, proc = smoke
    assert proc.returncode == 1, said(proc)  # bench failed on purpose
    steps = json.loads((out / "gpu-check.json").read_text())["steps"]
    assert list(steps) == ["env", "tests", "full", "bench", "short"]  # most valuable first
    assert {name: s["status"] for name, s in steps.items()} == {
        "env": "ok", "tests": "skipped", "full": "ok", "bench": "failed", "short": "ok"}, said(proc)
    for name, s in steps.items():
        assert s["mode"] == "smoke" and s["seconds"] > 0 and s["commands"], name
        assert s["torch"] == torch.__version__, name  # every record says which torch ran it
        assert all(c["command"] and c["seconds"] is not None for c in s["commands"]), name

    bench = steps["bench"]
    assert bench["commands"][0]["exit"] == 2
    assert bench["error"].startswith("bench.py exited 2: error: CIFAR-10 not found")  # its own words
    assert "error: CIFAR-10 not found" in bench["tail"]
    assert "no-such-data" in bench["commands"][0]["command"]
    assert (out / "logs" / "bench.log").read_text().endswith(bench["tail"])
    assert "error" not in steps["full"] and "tail" not in steps["full"]


def test_smoke_figures(smoke):
    out, proc = smoke
    steps = json.loads((out / "gpu-check.json").read_text())["steps"]
    env = steps["env"]["figures"]
    assert env["torch"] == torch.__version__ and env["torch_cuda"] == torch.version.cuda
    pin = re.search(r"^torch==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert env["torch_pinned"] == pin
    dali_wheel = env["dali_wheels"][0]
    assert env["dali"] == importlib.metadata.version(dali_wheel) and env["cuda_major_match"] is True
    assert env["grad_cam"] == importlib.metadata.version("grad-cam") and env["import_error"] is None  # both imported
    assert env["cuda_available"] is False and env["gpu"] is None
    assert "compile_problem" in env  # None where torch.compile can build: what the GPU machine lacks shows

    tests = steps["tests"]["figures"]
    assert (tests["passed"], tests["failed"]) == (0, 0) and tests["skipped"] >= 6
    assert "tests/test_gpu.py" in tests["modules"] and "tests/test_gpu_check.py" not in tests["modules"]
    assert tests["skip_reasons"] and all("GPU" in reason for reason in tests["skip_reasons"])
    assert 0 < len(tests["slowest"]) <= gpu_check.SLOWEST and all(s >= 0 for s in tests["slowest"].values())

    short = steps["short"]
    killed, resumed, viz = short["commands"]
    assert killed["exit"] == -9 and "--epochs 2" in killed["command"]  # SIGKILLed during epoch 2
    assert resumed["exit"] == 0 and "--resume" in resumed["command"] and viz["exit"] == 0
    figures = short["figures"]
    assert [r["epoch"] for r in figures["epochs"]] == [1, 2] and figures["img_s"] > 0
    assert 0 <= figures["test_acc"] <= 1 and 0 <= figures["viz_accuracy"] <= 1
    assert figures["viz_test_images"] == 64

    full = steps["full"]["figures"]
    assert full["epochs"] == 1 and full["wall_seconds"] >= full["train_seconds"] > 0
    assert full["img_s_median"] > 0 and 0 <= full["final_test_acc"] <= 1 and "best_test_acc" not in full


def test_smoke_prints_an_aligned_table(smoke):
    _, proc = smoke
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step "))
    table = lines[start:start + 6]
    assert re.split(r"\s{2,}", table[0]) == ["step", "mode", "torch", "status", "seconds", "figures"]
    assert [line.split()[:4] for line in table[1:]] == [
        [step, "smoke", torch.__version__, status] for step, status in
        [("env", "ok"), ("tests", "skipped"), ("full", "ok"), ("bench", "failed"), ("short", "ok")]]
    assert len({line.index(" smoke ") for line in table[1:]}) == 1  # columns line up
    assert "0 passed, 0 failed" in table[2] and "bench.py exited 2: error: CIFAR-10 not found" in table[4]


def test_later_calls_merge_into_the_same_file(smoke, tmp_path):
    out, _ = smoke
    results = tmp_path / "gpu-check.json"
    shutil.copy(out / "gpu-check.json", results)
    before = json.loads(results.read_text())["steps"]
    proc = check("--smoke", "--out", out, "--json", results, "--only", "tests")  # the quickest step
    assert proc.returncode == 0, said(proc)
    after = json.loads(results.read_text())["steps"]
    assert after["tests"]["status"] == "skipped" and after["tests"]["finished"] >= before["tests"]["finished"]
    assert {k: v for k, v in after.items() if k != "tests"} == {k: v for k, v in before.items() if k != "tests"}


def test_a_time_box_kills_the_step_and_is_recorded_as_it_runs(tmp_path, monkeypatch):
    def sleeper(check_, step):
        step.watch = lambda: step.figures.update(ticks=step.figures.get("ticks", 0) + 1)  # what it wrote so far
        step.run([sys.executable, "-c", "import time; time.sleep(600)"])

    monkeypatch.setitem(gpu_check.RUNNERS, "full", sleeper)
    monkeypatch.setattr(gpu_check, "PROGRESS_SECONDS", 0.1)
    saved = []  # copies: the records as they were when saved
    result = gpu_check.run_step("full", types.SimpleNamespace(smoke=True, torch="2.0"), 1.5, tmp_path, dict(os.environ),
                                save=lambda r: saved.append(json.loads(json.dumps(r))))
    assert result["status"] == "timeout" and "time box" in result["error"]
    assert result["commands"][0]["exit"] == -9  # killed, not left running
    assert "time.sleep(600)" in result["tail"]
    running = [r for r in saved if r["status"] == "running"]
    assert running and running[0]["commands"][0]["exit"] is None  # saved as soon as the command started
    assert running[-1]["figures"]["ticks"] >= 1  # and again with fresh figures while it ran
    assert saved[-1] == result and len(saved) == len(running) + 1


def test_sigterm_kills_the_running_step_saves_it_and_stops(tmp_path):
    """An outer time limit (`timeout` around a command) ends the check with SIGTERM: the step running then
    is recorded, its child killed, and no later step starts. Before that, the file already said it ran."""
    results, logs = tmp_path / "results" / "gpu-check.json", tmp_path / "results" / "logs"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "--json", str(results),
                             "--logs", str(logs), "--only", "full,short"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = logs / "full.log"
    deadline = time.monotonic() + 600
    while not (log.exists() and "train.py" in log.read_text()) and proc.poll() is None:
        assert time.monotonic() < deadline, "the full step never started train.py"
        time.sleep(0.05)
    running = json.loads(results.read_text())["steps"]["full"]  # written when train.py started
    assert running["status"] == "running" and "train.py" in running["commands"][0]["command"]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, f"{stdout}\n{stderr}"
    steps = json.loads(results.read_text())["steps"]
    assert list(steps) == ["full"]  # short never started
    full = steps["full"]
    assert full["status"] == "timeout" and full["stopped"] is True
    assert full["error"].startswith("stopped by signal 15 during full")
    assert full["commands"][-1]["exit"] == -9  # train.py killed with it, not left running


def test_a_signal_while_a_child_starts_waits_until_the_child_is_recorded(tmp_path, monkeypatch):
    """The race the SIGTERM test above once lost on a busy machine: a signal that lands inside Popen is
    held until the child is recorded, so the step's clean-up finds it and kills it."""
    popen = subprocess.Popen

    def popen_then_signal(*args, **kwargs):
        child = popen(*args, **kwargs)
        gpu_check.SIGNALS.handle(signal.SIGTERM, None)  # arrives before Popen has returned
        return child

    monkeypatch.setattr(gpu_check.subprocess, "Popen", popen_then_signal)
    step = gpu_check.Step("short", 600, tmp_path, dict(os.environ))
    with pytest.raises(gpu_check.Stopped, match="stopped by signal 15"):
        step.start([sys.executable, "-c", "import time; time.sleep(600)"])
    assert step.running is not None and step.running.poll() is None
    step.stop_running()
    assert step.commands[-1]["exit"] == -9


def test_table_survives_figures_it_cannot_summarise():
    results = {"steps": {"bench": {"mode": "gpu", "status": "ok", "seconds": 1.0, "figures": {"bench": {}}}}}
    assert gpu_check.table(results).splitlines()[1].endswith("in the JSON (no summary: KeyError 'results')")


def test_junit_counts():
    xml = """<testsuites><testsuite name="pytest" tests="4">
      <testcase classname="tests.test_gpu" name="test_a" time="61.25"/>
      <testcase classname="tests.test_gpu" name="test_b" time="0.5"><failure message="boom"/></testcase>
      <testcase classname="tests.test_gpu" name="test_c"><skipped message="needs a CUDA GPU"/></testcase>
      <testcase classname="tests.test_gpu" name="test_d"><skipped message="needs a CUDA GPU"/></testcase>
    </testsuite></testsuites>"""
    assert gpu_check.junit_counts(xml) == {"passed": 1, "failed": 1, "skipped": 2, "failures": ["test_b"],
                                           "skip_reasons": ["needs a CUDA GPU"],
                                           "slowest": {"test_a": 61.2, "test_b": 0.5, "test_c": 0.0, "test_d": 0.0}}


@pytest.mark.parametrize("args, says", [
    (["--smoke", "--only", "env,gpu"], "--only 'env,gpu': steps are env, tests, full, bench, short"),
    (["--smoke", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--smoke", "--python", "/no/such/python"], "--python /no/such/python: not an executable"),
    (["--smoke", "--python", "false"], "false cannot import torch"),
    (["--recipe", "0"], "--recipe 0: a kit has at least one part"),
    (["--smoke", "--data-dir", "{tmp}/empty"], "no CIFAR-10 in"),
    (["--smoke", "--json", "{tmp}/garbage.json"], "is not a gpu-check result file"),
    pytest.param(["--only", "env"], "sees no CUDA GPU: run this on a GPU machine, or add --smoke",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, says):
    (tmp_path / "garbage.json").write_text("not json")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = check("--out", tmp_path / "out", "--only", "env,short", *args)  # the case's own flags win
    assert proc.returncode == 2, said(proc)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and says in proc.stderr, said(proc)
    assert not (tmp_path / "out" / "logs").exists()  # nothing ran


# ------------------------------------------------------------------ the plan on a bare GPU machine
def test_the_recipe_fits_the_machine():
    """Within the device time in expectation; each `timeout` past its steps' boxes and each call's limit
    past its `timeout`s (so the check's own SIGTERM ends a step, recorded); at most 10 minutes a call;
    results written locally and copied back at the end of every call; the parts copied in order."""
    calls = gpu_check.recipe(3)
    assert gpu_check.START_MINUTES + sum(c["minutes"] for c in calls) <= gpu_check.DEVICE_MINUTES - 2  # a rerun's room
    assert [c["copied"] for c in calls][:3] == [".gpu-kit/parts/part-00", ".gpu-kit/parts/part-01",
                                                ".gpu-kit/parts/part-02, .gpu-kit/parts/SHA256SUMS"]
    checks = [c for c in calls if "gpu_check.py" in c["command"]]
    assert [re.search(r"--only (\S+);", c["command"]).group(1) for c in checks] == [
        ",".join(group) for group in gpu_check.GROUPS]
    for call, group in zip(checks, gpu_check.GROUPS):
        timeouts = [int(t) for t in re.findall(r"timeout (\d+) ", call["command"])]
        assert timeouts[-1] > sum(gpu_check.GPU_LIMITS[s] for s in group)
        assert sum(timeouts) < call["limit"] <= 600
        assert f"--json {gpu_check.RESULTS}/" in call["command"] and f"--logs {gpu_check.RESULTS}/" in call["command"]
        assert call["command"].endswith(f'; rc=$?; cp -r {gpu_check.RESULTS}/. "$OUT"/; exit $rc')
    assert "python3 -m offline install /tmp/kit-parts /tmp/kit" in checks[0]["command"]
    assert all(c["limit"] <= 600 for c in calls)


def test_docs_show_the_recipe_for_the_kit_that_exists():
    """docs/gpu.md holds --recipe's output for the part count of the measured kit, which it states."""
    docs = (ROOT / "docs" / "gpu.md").read_text()
    parts = int(re.search(r"calls for the measured kit \(`python3 tests/gpu_check.py --recipe (\d+)`\)", docs).group(1))
    assert re.search(rf"in {parts} parts: ", docs)
    proc = check("--recipe", parts)
    assert proc.returncode == 0, said(proc)
    assert proc.stdout.strip() in docs
