"""bench.py: a tiny run writes every figure (three loaders, ratios, taxes, FLOP/s and bytes/s arithmetic,
the scaling sweep, bench.png); a stage past its deadline fails named, exit 1, with the partial JSON;
user mistakes are one line and exit 2; the DataLoader's cutout. No assertion on speed: these machines
are shared."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import bench
from benchmark import limits, measure
from benchmark.loaders import Cutout
from common import cli
from tests.conftest import ROOT

PIPELINES = ("pipeline_dali", "pipeline_torch_ops", "pipeline_dataloader")
MODELS = ("model_only", "e2e_dali", "e2e_torch_ops", "e2e_dataloader")
# 8 synthetic images, one batch of 8 per epoch: every model-stage run crosses an epoch boundary of its
# loader's stream (where a stream that does not restart would hang or stop).
TINY = ["--device", "cpu", "--synthetic", "8", "--batch-size", "8", "--repeats", "2", "--model-steps", "1",
        "--workers", "1", "--run-seconds", "0"]


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy shared machine two threads wait on each other (5x slower steps)."""
    with measure.torch_threads(1):
        yield


def run_in_process(*args):
    """bench.py's main as the shell runs it: SystemExit's code, or 0."""
    try:
        cli.run(lambda: bench.main([str(a) for a in args]))
    except SystemExit as e:
        return e.code
    return 0


def test_tiny_run_writes_every_figure(tmp_path, capsys, one_thread):
    out = tmp_path / "bench.json"
    assert run_in_process(*TINY, "--scaling", "--scaling-batches", 4, 8, 16, "--json", out) == 0
    stdout, stderr = capsys.readouterr()
    report = json.loads(out.read_text())
    assert report["device"]["type"] == "cpu" and report["device"]["name"] and report["failed"] is None
    assert set(report["versions"]) == {"python", "torch", "torchvision", "dali"}
    assert all(report["versions"].values())
    config = report["config"]
    assert (config["batch_size"], config["workers"], config["repeats"], config["model_steps"]) == (8, 1, 2, 1)
    assert config["model_repeats"] == 2 and config["run_seconds"] == 0
    assert config["precision"] == "bf16" and config["loader_dtype"] == "float32" and config["channels_last"]
    assert report["data"]["synthetic"] is True and "synthetic" in report["data"]["source"]
    assert report["data"]["images"] == 8
    results = report["results"]
    assert set(results) == set(PIPELINES + MODELS)
    for key, r in results.items():
        assert len(r["runs"]) == 2 and r["min"] <= r["median"] <= r["max"] and r["min"] > 0
        assert r["cpu_per_wall"] > 0
        assert r["images_per_run"] == [8, 8]  # one pass or one step of one batch
        assert stderr.count(f"] {key} ") == (3 if key.startswith("pipeline") else 2) + (key == "model_only")
    check_ratios(report["ratios"], results)
    check_limits(report["limits"], results)
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
    with Image.open(tmp_path / "bench.png") as png:  # beside the JSON: bars and scaling curves
        assert png.format == "PNG" and png.size[0] > 800 and png.size[1] > 600
    for label in ("pipeline  DALI", "pipeline  torch ops", "pipeline  DataLoader", "model only",
                  "end-to-end  DALI", "end-to-end  torch ops", "end-to-end  DataLoader", "DALI / torch ops",
                  "DALI / DataLoader", "data-loading tax, DALI", "img/s by batch size", "img/s by threads"):
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


def check_limits(found: dict, results: dict):
    """Counted, not assumed: a ResNet18 training step is ~3x its 0.56 GMAC forward pass per image."""
    assert 3.0e9 < found["flops_per_image"] < 3.6e9
    for stage in MODELS:
        achieved = found["flops_per_image"] * results[stage]["median"] / 1e12
        assert found["model"][stage]["tflops"] == pytest.approx(achieved)
        assert found["model"][stage]["fraction_of_peak"] is None  # no known peak for a CPU
    for stage in PIPELINES:  # a 32x32x3 uint8 image read, float32 written
        p = found["pipelines"][stage]
        assert p["bytes_per_image"] == 3072 * 5 and p["fraction_of_bandwidth"] is None
        assert p["gbps"] == pytest.approx(3072 * 5 * results[stage]["median"] / 1e9)


def test_a_stage_past_its_deadline_fails_named_with_exit_1_and_the_partial_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run_in_process(*TINY, "--stage-timeout", 1e-6, "--json", out) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: stage 'pipeline_torch_ops' passed its deadline of 1e-06 s (raise it with "
                          "--stage-timeout")
    assert str(out) in err
    report = json.loads(out.read_text())
    assert report["failed"]["stage"] == "pipeline_torch_ops" and report["results"] == {}  # the first to run
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
    ("AMD EPYC 9654", False, None, None),
])
def test_peaks_by_device_name(name, gpu, peak, bandwidth):
    assert limits.hardware(name, gpu) == dict(bf16_peak_tflops=peak, memory_gbps=bandwidth)
    results = {"model_only": dict(median=20_000.0), "pipeline_dali": dict(median=1e6)}
    model = limits.compute(results, ["model_only"], 3.3e9, peak)["model_only"]
    assert model["tflops"] == pytest.approx(66.0)
    assert model["fraction_of_peak"] == (None if peak is None else pytest.approx(66.0 / peak))
    moved = limits.traffic(results, {"pipeline_dali": 9216}, bandwidth)["pipeline_dali"]
    assert moved["gbps"] == pytest.approx(9.216)
    assert moved["fraction_of_bandwidth"] == (None if bandwidth is None else pytest.approx(9.216 / bandwidth))


@pytest.mark.parametrize("args, says", [
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--batch-size", "512", "--images", "100"], "no full batch of 512"),
    (["--images", "5000"], "the data holds 300 images"),
    (["--workers", "-1"], "--workers must be >= 0"),
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


def test_no_dataset_is_an_error_from_the_shell_never_fake_data(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--device", "cpu", "--data-dir",
                           str(tmp_path / "empty"), "--json", str(tmp_path / "b.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: CIFAR-10 not found") and "--synthetic" in proc.stderr
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
