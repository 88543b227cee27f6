"""bench.py: a tiny run writes every figure; user mistakes are one line and exit 2; the baseline's cutout.
No assertion on speed: these machines are shared."""
import json
import os
import subprocess
import sys

import pytest
import torch

import bench
from common import cli
from tests.conftest import ROOT

STAGES = ("pipeline_dali", "pipeline_baseline", "model_only", "e2e_dali", "e2e_baseline")
# 48 synthetic images in 3 batches of 16; a model stage runs 1 + 2 x 2 = 5 steps, so its batch stream
# crosses epoch boundaries (where a stream that does not restart would hang or stop).
TINY = ["--device", "cpu", "--synthetic", "48", "--batch-size", "16", "--repeats", "2",
        "--model-steps", "2", "--workers", "1"]


def run_bench(*args):
    # One intra-op thread: on a busy shared machine two threads wait on each other (5x slower steps).
    return subprocess.run([sys.executable, str(ROOT / "bench.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_tiny_run_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench(*TINY, "--json", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"]["type"] == "cpu" and report["device"]["name"]
    assert set(report["versions"]) == {"python", "torch", "torchvision", "dali"}
    assert all(report["versions"].values())
    config = report["config"]
    assert (config["batch_size"], config["workers"], config["repeats"], config["model_steps"]) == (16, 1, 2, 2)
    assert config["precision"] == "bf16" and config["loader_dtype"] == "float32" and config["channels_last"]
    assert report["data"]["synthetic"] is True and "synthetic" in report["data"]["source"]
    assert report["data"]["images"] == 48
    for key in STAGES:
        r = report["results"][key]
        assert len(r["runs"]) == 2 and r["min"] <= r["median"] <= r["max"] and r["min"] > 0
        assert r["cpu_per_wall"] > 0
        assert r["images_per_run"] == (48 if key.startswith("pipeline") else 32)
    ratios = report["ratios"]
    assert all(ratios[k] > 0 for k in ("pipeline_dali_over_baseline", "e2e_dali_over_model_only",
                                       "e2e_dali_over_e2e_baseline"))
    assert ratios["data_loading_tax"] == pytest.approx(1 - ratios["e2e_dali_over_model_only"])
    memory = report["memory"]
    assert memory["host_rss_peak_mb"] > 0 and memory["worker_rss_peak_mb"] > 0
    assert set(memory["host_rss_peak_mb_after"]) == set(STAGES)
    assert memory["gpu_max_allocated_mb"] is None  # on a CPU
    assert report["seconds"] > 0
    # The table names every stage and the ratio the issue asks for.
    for label in ("pipeline  DALI", "pipeline  DataLoader", "model only", "end-to-end  DALI",
                  "end-to-end  DataLoader", "data-loading tax"):
        assert label in proc.stdout


@pytest.mark.parametrize("args, says", [
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--batch-size", "512", "--images", "100"], "no full batch of 512"),
    (["--images", "5000"], "the data holds 300 images"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--model", "vgg"], "invalid choice: 'vgg'"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys, args, says):
    with pytest.raises(SystemExit) as exit_:  # in-process: each fails before anything is measured
        cli.run(lambda: bench.main(["--device", "cpu", "--synthetic", "300", *args,
                                    "--json", str(tmp_path / "b.json")]))
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err
    assert not (tmp_path / "b.json").exists()


def test_no_dataset_is_an_error_from_the_shell_never_fake_data(tmp_path):
    proc = run_bench("--device", "cpu", "--data-dir", tmp_path / "empty", "--json", tmp_path / "b.json")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: CIFAR-10 not found") and "--synthetic" in proc.stderr
    assert not (tmp_path / "b.json").exists()


def test_cutout_zeroes_one_clipped_square_with_uniform_centre():
    torch.manual_seed(0)
    cut = bench.Cutout(16)
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
