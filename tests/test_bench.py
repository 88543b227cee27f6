"""bench.py: a tiny run writes every figure (three loaders, ratios, taxes, FLOP/s and bytes/s arithmetic,
the machine's load per stage, the scaling sweep, bench.png); another, with a planted busy process
while the torch-ops loader runs, marks that stage and its ratios unreliable in the JSON, the table and
the picture, and trains the fast-path variants (torch.compile replaced by an eager stand-in: compiling
takes minutes on 2 cores); planted figures make the verdicts (spread, ties, impossible taxes, choices);
the thread count follows the free cores; a stage past its deadline fails named, exit 1, with the
partial JSON; user mistakes are one line and exit 2; the DataLoader's cutout. No assertion on speed:
these machines are shared."""
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import bench
import pipeline
from benchmark import fastpaths, limits, machine, measure, plot, report as reports, run, stages, verdict
from benchmark.loaders import Cutout
from common import cli, device as devices
from training import Config, resolve

PIPELINES = ("pipeline_dali", "pipeline_torch_ops", "pipeline_dataloader")
MODELS = ("model_only", "e2e_dali", "e2e_torch_ops", "e2e_dataloader")
# 8 synthetic images, one batch of 8 per epoch: every model-stage run crosses an epoch boundary of its
# loader's stream (where a stream that does not restart would hang or stop).
TINY = ["--device", "cpu", "--synthetic", "8", "--batch-size", "8", "--repeats", "2", "--model-steps", "1",
        "--workers", "1", "--run-seconds", "0"]


# bf16 where this CPU has it natively; a CPU that only emulates it skips those variants, with the reason.
VARIANTS = ["bf16:eager", "fp32:eager", "fp32:reduce-overhead"]
PRECISION = "bf16" if devices.cpu_has_native_bf16() else "fp32"  # what --precision auto picks here


def run_in_process(*args):
    """bench.py's main as the shell runs it: SystemExit's code, or 0."""
    try:
        cli.run(lambda: bench.main([str(a) for a in args]))
    except SystemExit as e:
        return e.code
    return 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run with everything: the scaling sweep, the fast paths, and another process that seems
    busy whenever the torch-ops loader runs (the machine's busy time grows by a core-second in each of
    its passes). torch.compile is an eager stand-in that records its mode: compiling ResNet18 takes
    ~40 s on 2 idle cores, and even a one-layer model 10-25 s on busy ones (measured)."""
    out, planted, modes = tmp_path_factory.mktemp("tiny") / "bench.json", [0.0], []
    iterate, sample = pipeline.TensorLoader.__iter__, machine.sample

    def held_core(self):
        yield from iterate(self)
        planted[0] += 1.0

    def busy_sample():
        taken = sample()
        return taken._replace(busy=taken.own + planted[0])

    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(stdout), redirect_stderr(stderr):
        patch.setattr(pipeline.TensorLoader, "__iter__", held_core)
        patch.setattr(machine, "sample", busy_sample)
        patch.setattr(machine, "MIN_WINDOW", 0.0)  # judge the tiny runs too
        patch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
        code = run_in_process(*TINY, "--threads", 1, "--scaling", "--scaling-batches", 4, 8, 16,
                              "--fast-paths", "--fast-path-variants", *VARIANTS, "--json", out)
    assert code == 0, stderr.getvalue()[-2000:]
    return SimpleNamespace(report=json.loads(out.read_text()), stdout=stdout.getvalue(),
                           stderr=stderr.getvalue(), modes=modes, png=out.with_suffix(".png"))


@pytest.mark.precision
def test_tiny_run_writes_every_figure(tiny):
    stdout, stderr = tiny.stdout, tiny.stderr
    report = tiny.report
    assert report["device"]["type"] == "cpu" and report["device"]["name"] and report["failed"] is None
    assert set(report["versions"]) == {"python", "torch", "torchvision", "dali"}
    assert all(report["versions"].values())
    config = report["config"]
    assert (config["batch_size"], config["workers"], config["repeats"], config["model_steps"]) == (8, 1, 2, 1)
    assert config["model_repeats"] == 2 and config["run_seconds"] == 0
    assert config["precision"] == PRECISION and config["loader_dtype"] == "float32" and config["channels_last"]
    # One thread: on a busy shared machine two threads wait on each other (5x slower steps).
    assert (config["threads"], config["torch_threads"], config["dali_threads"]) == (1, 1, 1)
    assert config["threads_from"] == "--threads" and config["others_cores_start"] is None
    assert report["complete"] is True
    assert report["data"]["synthetic"] is True and "synthetic" in report["data"]["source"]
    assert report["data"]["images"] == 8
    results = report["results"]
    assert set(results) == set(PIPELINES + MODELS)
    for key, r in results.items():
        assert len(r["runs"]) == 2 and r["min"] <= r["median"] <= r["max"] and r["min"] > 0
        assert r["cpu_per_wall"] > 0
        assert r["images_per_run"] == [8, 8]  # one pass or one step of one batch
        assert len(r["load_average"]) == 2 and len(r["others_cores_runs"]) == 2
        assert r["others_cores"] is None or r["others_cores"] >= 0  # None: runs too short to judge
        assert r["unreliable"] == verdict.reasons(r)
        assert stderr.count(f"] {key} ") == (3 if key.startswith("pipeline") else 2) + (key == "model_only")
    check_ratios(report["ratios"], results)
    check_limits(report["limits"], results, report["device"])
    assert set(report["verdicts"]["comparisons"]) == {
        f"{kind}_dali_over_{peer}" for kind in ("pipeline", "e2e") for peer in ("torch_ops", "dataloader")}
    assert set(report["recommendation"]) == {"loader", "precision", "compile"}
    scaling = report["scaling"]  # JSON keys are strings; 16 > 8 images: no full batch, left out
    threads = sorted({1, 2, os.cpu_count()})
    for loader in ("dali", "torch_ops", "dataloader"):
        assert sorted(scaling["batch_size"][loader], key=int) == ["4", "8"]
        assert sorted(map(int, scaling["threads"][loader])) == threads
        assert all(p["median"] > 0 and len(p["runs"]) == 2 for p in scaling["threads"][loader].values())
    memory = report["memory"]
    assert memory["host_rss_peak_mb"] > 0 and memory["worker_rss_peak_mb"] > 0
    assert set(memory["host_rss_peak_mb_after"]) == {"pipelines", "models", "scaling"}
    assert memory["gpu_max_allocated_mb"] is None  # on a CPU
    assert report["seconds"] > 0 and report["device"]["load_average_end"] >= 0
    with Image.open(tiny.png) as png:  # beside the JSON: bars, fast paths and scaling curves
        assert png.format == "PNG" and png.size[0] > 800 and png.size[1] > 1000
    for label in ("pipeline  DALI", "pipeline  torch ops", "pipeline  DataLoader", "model only",
                  "end-to-end  DALI", "end-to-end  torch ops", "end-to-end  DataLoader", "DALI / torch ops",
                  "DALI / DataLoader", "data-loading tax, DALI", "img/s by batch size", "img/s by threads",
                  "others' cores", "reliable", "threads", "defaults this run would choose", "loader"):
        assert label in stdout


def check_ratios(ratios: dict, results: dict):
    median = {k: r["median"] for k, r in results.items()}
    for kind in ("pipeline", "e2e"):
        for peer in ("torch_ops", "dataloader"):
            expected = median[f"{kind}_dali"] / median[f"{kind}_{peer}"]
            assert ratios[f"{kind}_dali_over_{peer}"] == pytest.approx(expected)
    for loader, tax in ratios["data_loading_tax_by_loader"].items():
        assert tax == pytest.approx(1 - median[f"e2e_{loader}"] / median["model_only"])
    assert ratios["data_loading_tax"] == ratios["data_loading_tax_by_loader"]["dali"]
    assert ratios["data_loading_tax"] == pytest.approx(1 - ratios["e2e_dali_over_model_only"])


def check_limits(found: dict, results: dict, device: dict):
    """Counted, not assumed: a ResNet18 training step is ~3x its 0.56 GMAC forward pass per image. A CPU's
    peak is known in fp32 only."""
    assert 3.0e9 < found["flops_per_image"] < 3.6e9
    assert device["bf16_peak_tflops"] is None and device["fp32_peak_tflops"] == limits.cpu_fp32_peak(1)
    for stage in MODELS:
        achieved = found["flops_per_image"] * results[stage]["median"] / 1e12
        assert found["model"][stage]["tflops"] == pytest.approx(achieved)
        peak = device["fp32_peak_tflops"] if PRECISION == "fp32" else None
        expected = achieved / peak if peak else None
        assert found["model"][stage]["fraction_of_peak"] == (expected and pytest.approx(expected))
    for stage in PIPELINES:  # a 32x32x3 uint8 image read, float32 written
        p = found["pipelines"][stage]
        assert p["bytes_per_image"] == 3072 * 5 and p["fraction_of_bandwidth"] is None
        assert p["gbps"] == pytest.approx(3072 * 5 * results[stage]["median"] / 1e9)


@pytest.mark.precision
def test_a_busy_machine_marks_the_stage_unreliable_in_the_json_the_table_and_the_picture(tiny):
    report, stdout = tiny.report, tiny.stdout
    results, comparisons = report["results"], report["verdicts"]["comparisons"]
    busy = results["pipeline_torch_ops"]
    assert busy["others_cores"] > 0.5 and busy["unreliable"][0].startswith("other processes used")
    for stage in ("pipeline_dali", "pipeline_dataloader", "model_only", "e2e_dali"):
        assert results[stage]["others_cores"] == pytest.approx(0, abs=1e-9)  # the planted process was idle
        assert not any("other processes" in why for why in results[stage]["unreliable"])
    assert comparisons["pipeline_dali_over_torch_ops"]["reliable"] is False
    assert any(why.startswith("pipeline torch ops: other processes used")
               for why in comparisons["pipeline_dali_over_torch_ops"]["unreliable"])
    row = next(line for line in stdout.splitlines() if line.startswith("| pipeline  torch ops"))
    assert row.rstrip(" |").endswith("NO")
    assert "UNRELIABLE" in next(line for line in stdout.splitlines() if line.startswith("| DALI / torch ops"))
    assert "warning: pipeline torch ops: unreliable: other processes used" in stdout
    assert any(w.startswith("pipeline torch ops: unreliable: other processes used")
               for w in report["warnings"])
    ax = Figure().subplots()  # the same marks in the picture: the bar hatched, the axis whole
    pipelines = {k: results[k] for k in PIPELINES}
    plot.bars(ax, pipelines, ["tab:green", "tab:blue", "tab:orange"], "each loader alone", log=True)
    doubtful = [bool(f["unreliable"]) for f in pipelines.values()]  # torch ops; tiny runs may spread too
    assert [bar.get_hatch() == "//" for bar in ax.patches] == doubtful and doubtful[1]
    assert ["UNRELIABLE" in text.get_text() for text in ax.texts] == doubtful
    bottom, top = ax.get_ylim()
    assert bottom <= min(f["min"] for f in pipelines.values())
    assert top >= max(f["max"] for f in pipelines.values())
    assert len([t for t in ax.get_yticks() if bottom <= t <= top]) >= 3  # 1, 2, 5 of each decade


@pytest.mark.precision
def test_the_fast_paths_train_each_variant_and_say_what_they_would_choose(tiny):
    report = tiny.report
    assert tiny.modes == ["reduce-overhead"]  # eager variants are not compiled
    variants, kept = report["fast_paths"]["variants"], [v for v in VARIANTS if PRECISION == "bf16" or "bf16" not in v]
    assert list(variants) == kept and report["config"]["fast_path_variants"] == kept
    emulated = {v: devices.emulated_bf16("bf16", torch.device("cpu")) for v in VARIANTS if v not in kept}
    assert report["config"]["fast_path_skipped"] == emulated  # said, not hidden
    assert all(f"{fastpaths.label(v)}: not measured: {why}" in report["warnings"] for v, why in emulated.items())
    for name, f in variants.items():
        assert f"{f['precision']}:{f['mode']}" == name
        assert f["warmup_seconds"] > 0 and f["gpu_peak_mb"] is None
        assert f["images_per_run"] == [8, 8] and f["min"] <= f["median"] <= f["max"]
        stage = "step_" + name.replace(":", "_")
        assert tiny.stderr.count(f"] {stage} ") == 3  # built and warmed up, then 2 timed runs
        assert report["limits"]["fast_paths"][name]["tflops"] > 0
    choices = report["recommendation"]
    assert choices["precision"]["measured_with"] == "eager" and choices["precision"]["current"] == PRECISION
    assert choices["compile"]["measured_with"] == "fp32" and choices["compile"]["current"] == "eager"
    assert choices["compile"]["fastest"] in ("eager", "reduce-overhead")
    for what in ("precision (at eager)", "compile mode (at fp32)", "loader (train.py --loader"):
        assert f"- {what}" in tiny.stdout
    assert "step fp32, compile reduce-overhead" in tiny.stdout


def planted(*rates, others=0.0) -> dict:
    figures = dict(median=statistics.median(rates), min=min(rates), max=max(rates), runs=list(rates),
                   images_per_run=[512] * len(rates), cpu_per_wall=1.0, others_cores=others,
                   others_cores_runs=[others] * len(rates), load_average=[0.2, 0.3])
    return {**figures, "unreliable": verdict.reasons(figures)}


@pytest.mark.precision
def test_planted_figures_make_the_verdicts(tiny):
    """A wide spread, a tie, a win beyond the spread, an impossible tax, and the choices they allow."""
    report = copy.deepcopy(tiny.report)
    report["results"].update(
        pipeline_dali=planted(100, 300, 320), pipeline_torch_ops=planted(50, 52, 55),
        pipeline_dataloader=planted(10, 11, 12), model_only=planted(10, 11, 12),
        e2e_dali=planted(30, 31, 33), e2e_torch_ops=planted(11, 12, 13), e2e_dataloader=planted(9, 10, 11.5))
    report["fast_paths"]["variants"] = (
        {name: {**planted(*rates), "gpu_peak_mb": None, "warmup_seconds": 1.0}
         for name, rates in (("bf16:eager", (100, 105, 110)), ("fp32:eager", (120, 122, 125)),
                             ("bf16:reduce-overhead", (105, 108, 115)))})
    report["config"]["fast_path_skipped"] = {"bf16:default": "no compiler"}
    reports.judge(report)
    assert "step bf16, compile default: not measured: no compiler" in report["warnings"]
    assert report["results"]["pipeline_dali"]["unreliable"] == ["its runs spread 3.2x (max / min)"]
    c, taxes = report["verdicts"]["comparisons"], report["verdicts"]["taxes"]
    assert not c["pipeline_dali_over_torch_ops"]["reliable"]  # DALI's spread
    assert c["e2e_dali_over_torch_ops"]["beyond_spread"]
    assert verdict.word(c["e2e_dali_over_torch_ops"]) == "faster"
    assert verdict.word(c["e2e_dali_over_dataloader"]) == "faster"
    assert taxes["dali"]["impossible"] and taxes["dali"]["value"] == pytest.approx(1 - 31 / 11)
    assert taxes["torch_ops"]["reliable"] and not taxes["torch_ops"]["impossible"]  # 12 vs 11: runs overlap
    noise = verdict.tax(planted(100.5, 101, 101.5), planted(99, 99.5, 100), "DALI")  # apart, but within 3 %
    assert noise["value"] == pytest.approx(1 - 101 / 99.5) and noise["reliable"] and not noise["impossible"]
    choices = report["recommendation"]
    assert choices["loader"]["choice"] == "dali" and choices["loader"]["beyond_spread"]
    assert choices["precision"]["choice"] == "fp32"
    assert choices["precision"]["margin"] == pytest.approx(122 / 105 - 1)
    assert choices["compile"]["fastest"] == "reduce-overhead" and not choices["compile"]["beyond_spread"]
    assert choices["compile"]["choice"] == "eager"  # within the runs' spread: the default stays
    text = reports.tables(report)
    assert "data-loading tax, DALI: -181.8%: IMPOSSIBLE" in text
    assert ("- compile mode (at bf16): keep eager (reduce-overhead +2.9% over eager, within the runs' spread)"
            in text)
    assert "- precision (at eager): fp32 (fp32 +16.2% over bf16, beyond the runs' spread)" in text


@pytest.mark.parametrize("files, cores", [
    (["max 100000"], None), (["200000 100000"], 2.0), (["-1", "100000"], None), (["150000", "100000"], 1.5)])
def test_a_cgroup_cpu_quota_is_read(tmp_path, monkeypatch, files, cores):
    paths = [tmp_path / f"f{i}" for i in range(len(files))]
    for path, text in zip(paths, files):
        path.write_text(text + "\n")
    monkeypatch.setattr(machine, "CGROUP_QUOTAS", ((str(tmp_path / "absent"),), tuple(map(str, paths))))
    assert machine.cpu_quota() == cores
    monkeypatch.setattr(machine, "SHARED", True)  # a quota below the CPUs it may run on: others' use not judged
    assert machine.machine_busy() is None and machine.others_cores(machine.sample(), machine.sample()) is None


def test_threads_follow_the_free_cores_and_child_processes_count_as_this_run():
    opts = SimpleNamespace(threads=0, workers=None)  # no --threads: the cores left free in the first 0.5 s
    chosen = run.choose_threads(opts).as_config()
    assert chosen["threads_from"] == "cores free at the start" and chosen["others_cores_start"] >= 0
    assert chosen["workers"] == chosen["threads"] == machine.threads_for(machine.CORES, chosen["others_cores_start"])
    assert chosen["dali_threads"] == min(4, chosen["threads"]) and chosen["torch_threads"] == chosen["threads"]
    assert [machine.threads_for(2, o) for o in (None, 0.0, 0.25, 0.3, 0.9, 1.9)] == [2, 2, 2, 1, 1, 1]
    assert machine.threads_for(16, 3.0) == 13
    before, after = machine.Sample(0.0, 10.0, 1.0), machine.Sample(2.0, 13.0, 2.0)
    assert machine.others_cores(before, after) == pytest.approx(1.0)  # 3 busy seconds, 1 of them ours, in 2 s
    assert machine.others_cores(before._replace(busy=None), after) is None
    mine = machine.own_cpu()
    burn = "import sys, time\nwhile time.process_time() < 0.3: pass\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    deadline = time.monotonic() + 120  # a bound for a hung child only
    while machine.process_cpu(child.pid) < 0.25 and time.monotonic() < deadline:  # /proc counts 10 ms ticks
        time.sleep(0.05)
    assert machine.own_cpu() - mine >= 0.25  # a live child's CPU time is this run's
    child.communicate(b"")
    assert machine.own_cpu() - mine >= 0.25  # and still once it has ended and been reaped
    before = machine.sample()
    assert before.busy >= before.own - mine  # /proc/stat read: the machine's busy time includes ours
    assert machine.others_cores(before, machine.sample()) >= 0


@pytest.mark.parametrize("rate, images, batch", [(100, 10240, 512), (20, 10240, 128), (20, 100, 64), (1, 10240, 32)])
def test_a_cpu_batch_fits_the_model_stages_in_a_minute_at_the_probed_speed(monkeypatch, rate, images, batch):
    monkeypatch.setattr(stages, "probe", lambda cfg, device: float(rate))  # images/s of a training step
    chosen, how = run.cpu_batch(resolve(Config(device="cpu")), torch.device("cpu"), 1, images)
    assert chosen == batch and how.startswith(f"a probe step: {rate} img/s, so {batch} keeps")
    assert 9 * chosen / rate <= 60 or chosen == 32  # a warm-up and 2 rounds of 4 stages, one step each


def test_a_stages_cpu_per_second_counts_its_child_processes():
    """A DataLoader's workers do its work in other processes: their CPU time is the stage's."""
    burn = [sys.executable, "-c", "import time\nwhile time.process_time() < 0.3: pass"]
    run_ = {"child": lambda check: subprocess.run(burn, check=True) and 1}
    deadline = {"child": measure.Deadline("child", 120, lambda *a: None)}
    figures = measure.interleaved(run_, deadline, warmup=0, repeats=1, sync=lambda: None,
                                  progress=lambda *a: None)["child"]
    assert figures["cpu_per_wall"] / figures["median"] >= 0.25  # CPU seconds of the one run


@pytest.mark.skipif(not os.environ.get("BENCH_COMPILE"), reason=(
    "compiles ResNet18 for real: ~40 s per mode on 2 idle cores, 1-2 minutes on busy ones (measured), past "
    "the suite's budget; the variants are tested above with an eager stand-in. BENCH_COMPILE=1 runs it"))
def test_the_compiled_fast_paths_run_for_real(tmp_path):
    if problem := devices.compile_problem("cpu"):
        pytest.skip(problem)
    out, asked = tmp_path / "bench.json", ["fp32:eager", "fp32:default", "fp32:reduce-overhead"]
    assert run_in_process(*TINY, "--threads", 1, "--fast-paths", "--fast-path-variants", *asked,
                          "--json", out) == 0
    variants = json.loads(out.read_text())["fast_paths"]["variants"]
    assert list(variants) == asked and all(len(f["runs"]) == 2 and f["min"] > 0 for f in variants.values())


def test_without_a_compiler_the_compiled_variants_are_left_out_and_compile_is_refused(tmp_path, capsys,
                                                                                      monkeypatch):
    problem = "torch.compile needs a C++ compiler on the CPU (...): install g++, or leave out --compile"
    monkeypatch.setattr(devices, "compile_problem", lambda device="auto": problem)
    asked = ["fp32:eager", "fp32:default", "fp16:reduce-overhead"]
    kept, skipped = fastpaths.runnable(asked, torch.device("cpu"))
    assert kept == ["fp32:eager"] and skipped == {"fp32:default": problem, "fp16:reduce-overhead": problem}
    code = run_in_process("--device", "cpu", "--synthetic", "300", "--compile", "--json", tmp_path / "b.json")
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {problem}\n" and not (tmp_path / "b.json").exists()


def test_a_stage_past_its_deadline_fails_named_with_exit_1_and_the_partial_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = [str(a) for a in (*TINY, "--stage-timeout", 1e-6, "--json", out)]
    with pytest.raises(cli.Incomplete, match="passed its deadline"):  # from Python: raised, never an exit
        bench.main(args)
    assert run_in_process(*args) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: stage 'pipeline_torch_ops' passed its deadline of 1e-06 s (raise it with "
                          "--stage-timeout")
    assert str(out) in err
    report = json.loads(out.read_text())
    assert report["failed"]["stage"] == "pipeline_torch_ops" and report["results"] == {}  # the first to run
    assert report["config"]["fast_paths"] is False and report["complete"] is False  # opt-in on a CPU
    assert report["seconds"] > 0 and not (tmp_path / "bench.png").exists()


def test_a_call_stuck_past_the_deadline_is_reported_by_the_watchdog(monkeypatch):
    monkeypatch.setattr(measure, "GRACE", 0.05)
    calls = []
    with measure.Deadline("pipeline_x", 0.05, lambda *a: calls.append(a)):
        time.sleep(0.5)  # a call no check interrupts
    assert len(calls) == 1 and calls[0][0] == "pipeline_x" and "stuck for 0.05 s more" in calls[0][1]
    # An error from a stage past its deadline (the DataLoader's own timeout, say) is the overrun.
    with pytest.raises(measure.StageOverrun, match="stage 'e2e_x' passed its deadline"):
        with measure.Deadline("e2e_x", 0.01, lambda *a: None):
            time.sleep(0.05)
            raise RuntimeError("DataLoader timed out after 0.01 seconds")


@pytest.mark.parametrize("name, gpu, peak, bandwidth", [
    ("NVIDIA H100 80GB HBM3", True, 989.4, 3350), ("NVIDIA H100 PCIe", True, 756, 2000),
    ("NVIDIA H200", True, 989.4, 4800), ("NVIDIA A100-SXM4-80GB", True, 312, 2039),
    ("NVIDIA A100-SXM4-40GB", True, 312, 1555), ("NVIDIA L4", True, 121, 300),
    ("NVIDIA H200 NVL", True, None, None), ("NVIDIA GeForce RTX 4090", True, None, None),
])
def test_peaks_by_device_name(name, gpu, peak, bandwidth):
    assert limits.hardware(name, gpu) == dict(bf16_peak_tflops=peak, fp32_peak_tflops=None, memory_gbps=bandwidth)
    results = {"model_only": dict(median=20_000.0), "pipeline_dali": dict(median=1e6)}
    model = limits.compute(results, {"model_only": peak}, 3.3e9)["model_only"]
    assert model["tflops"] == pytest.approx(66.0)
    assert model["fraction_of_peak"] == (None if peak is None else pytest.approx(66.0 / peak))
    moved = limits.traffic(results, {"pipeline_dali": 9216}, bandwidth)["pipeline_dali"]
    assert moved["gbps"] == pytest.approx(9.216)
    assert moved["fraction_of_bandwidth"] == (None if bandwidth is None else pytest.approx(9.216 / bandwidth))


@pytest.mark.parametrize("vendor, family, flags, per_core_cycle", [
    ("GenuineIntel", 6, "fma avx2 avx512f", 64),     # two 512-bit FMA pipes
    ("AuthenticAMD", 25, "fma avx2 avx512f", 32),    # Zen 4: 512-bit FMAs in two 256-bit halves
    ("AuthenticAMD", 26, "fma avx2 avx512f", 64),    # Zen 5
    ("AuthenticAMD", 23, "fma avx2", 32), ("GenuineIntel", 6, "sse4_2", 16),
])
def test_a_cpus_fp32_peak_follows_its_vector_width_clock_and_cores(tmp_path, vendor, family, flags,
                                                                  per_core_cycle):
    info = tmp_path / "cpuinfo"  # the first processor's block is read
    block = f"vendor_id\t: {vendor}\ncpu family\t: {family}\ncpu MHz\t\t: 2500.000\nflags\t\t: {flags}\n"
    info.write_text(block + "\n" + block.replace("2500", "1"))
    assert limits.cpu_fp32_peak(3, info) == pytest.approx(per_core_cycle * 2.5e9 * 3 / 1e12)
    assert limits.cpu_fp32_peak(1, tmp_path / "absent") is None


@pytest.mark.parametrize("args, says", [
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--batch-size", "512", "--images", "100"], "no full batch of 512"),
    (["--images", "5000"], "the data holds 300 images"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--threads", "-1"], "--threads must be >= 0"),
    (["--fast-path-variants", "bf16:turbo"], "expected PRECISION:MODE"),
    (["--model", "vgg"], "invalid choice: 'vgg'"),
    (["--stage-timeout", "0"], "--stage-timeout must be > 0"),
    (["--run-seconds", "-1"], "--run-seconds must be >= 0"),
    (["--model-repeats", "-1"], "--model-repeats must be >= 0"),
    (["--scaling-batches", "0", "16"], "--scaling-batches must all be >= 1"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys, args, says):
    code = run_in_process("--device", "cpu", "--synthetic", "300", *args, "--json", tmp_path / "b.json")
    err = capsys.readouterr().err  # each fails before anything is measured
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err
    assert not (tmp_path / "b.json").exists()


def test_no_dataset_is_an_error_never_fake_data(tmp_path, capsys):
    code = run_in_process("--device", "cpu", "--data-dir", tmp_path / "empty", "--json", tmp_path / "b.json")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err[-2000:]
    assert err.startswith("error: CIFAR-10 not found") and "--synthetic" in err
    assert not (tmp_path / "b.json").exists()


def test_cutout_zeroes_one_clipped_square_with_uniform_centre():
    torch.manual_seed(0)
    cut = Cutout(16)
    full, sides = 0, set()
    for _ in range(2000):
        x = cut(torch.ones(3, 32, 32))
        zero = x[0] == 0
        assert torch.equal(zero, (x == 0).all(0))  # every channel
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert zero.sum() == len(rows) * len(cols)  # one axis-aligned rectangle
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16  # the centre is inside the image
        full += len(rows) == len(cols) == 16
        sides.add(len(rows))
    assert sides == set(range(8, 17))
    assert abs(full / 2000 - (17 / 32) ** 2) < 0.05  # as in the DALI pipeline's test
