"""train.py: optimizers, schedules, the LR range test, runs, exact resume, and user mistakes."""
import csv
import hashlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import nets
import train
from common import cli
from nets import checkpoint
from training import config, lr_finder
from training.build import build_optimizer, build_scheduler
from training.data import split
from training.step import train_step
from tests.conftest import ROOT

# Tiny but real: 96 images in batches of 32 (3 steps an epoch), 40 test images, fp32 for exactness.
TINY = ["--device", "cpu", "--precision", "fp32", "--batch-size", "32", "--limit-train", "96",
        "--limit-test", "40"]


def run(*args, check=True, **kw):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted 3-epoch run: what interrupted-and-resumed runs must reproduce exactly."""
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = run("--data-dir", data_dir, "--out", out, "--epochs", 3, *TINY)
    return out, proc


def weights(path):
    return checkpoint.load(path)["model"]


def same_history(a, b):
    keys = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "test_count")
    return [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]


# ------------------------------------------------------------------------------ optimizers, schedules
def tiny_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)


@pytest.mark.parametrize("optimizer", config.OPTIMIZERS)
def test_every_optimizer_trains_and_changes_weights(optimizer):
    cfg = config.build({"optimizer": optimizer, "momentum": 0.0 if optimizer == "sgd" else 0.9}, None)
    model = nets.create("resnet18")
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    amp = torch.autocast("cpu", enabled=False)
    x, y = tiny_batch()
    losses = [float(train_step(model, opt, scaler, amp, x, y)[0]) for _ in range(2)]
    assert all(np.isfinite(losses))
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.param_groups[0]["lr"] == config.DEFAULT_LR[optimizer]


def lrs_of(cfg, metric_per_epoch, steps=10):
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg, model, torch.device("cpu"))
    sched = build_scheduler(cfg, opt, steps)
    lrs = []
    for epoch in range(cfg.epochs):
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if cfg.scheduler == "onecycle":
                sched.step()
        if cfg.scheduler == "plateau":
            sched.step(metric_per_epoch[epoch])
    return lrs


def test_onecycle_peaks_at_max_lr():
    cfg = config.build({"lr": 0.3, "epochs": 4}, None)
    lrs = lrs_of(cfg, None)
    assert max(lrs) == pytest.approx(0.3)
    assert lrs[0] < 0.3 / 10 and lrs[-1] < 0.3 / 1000  # warm-up from low, anneal to near zero
    assert np.argmax(lrs) == pytest.approx(0.25 * len(lrs), abs=1)


def test_none_scheduler_keeps_lr():
    cfg = config.build({"lr": 0.05, "epochs": 2, "scheduler": "none"}, None)
    assert set(lrs_of(cfg, None)) == {0.05}


def test_plateau_reduces_after_patience_and_rel_differs_from_abs():
    # The loss falls 0.0004 an epoch: progress for abs (1e-4), too little for rel (1e-3 x ~1.0).
    losses = [1.0 - 0.0004 * e for e in range(6)]
    base = {"lr": 0.1, "epochs": 6, "scheduler": "plateau", "plateau_patience": 1,
            "plateau_factor": 0.5}
    rel = lrs_of(config.build({**base, "plateau_threshold": 1e-3,
                                     "plateau_threshold_mode": "rel"}, None), losses, steps=1)
    absolute = lrs_of(config.build({**base, "plateau_threshold": 1e-4,
                                          "plateau_threshold_mode": "abs"}, None), losses, steps=1)
    # rel: epochs 1-2 are "flat" (> patience 1) -> halved for epoch 3; 0.9988 < 0.999 then counts.
    assert rel == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
    assert absolute == [0.1] * 6


def test_validation_split_is_deterministic_and_disjoint():
    n = 500
    data = type("D", (), {"train": (np.arange(n)[:, None], np.arange(n)),
                          "test": (np.zeros((10, 1)), np.zeros(10))})
    cfg = config.build({"val_split": 0.2, "seed": 5}, None)
    a, b = split(cfg, data), split(cfg, data)
    assert np.array_equal(a["val"][1], b["val"][1]) and len(a["val"][1]) == 100
    assert set(a["val"][1]).isdisjoint(a["train"][1]) and len(a["train"][1]) == 400
    other = split(config.build({"val_split": 0.2, "seed": 6}, None), data)
    assert not np.array_equal(a["val"][1], other["val"][1])
    assert len(a["test"][1]) == 10  # test stays test


def test_range_test_finds_a_finite_lr_in_range_and_restores_weights():
    # Least squares: the loss falls while lr < 2 / (largest curvature), then explodes.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64, generator=g)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]

    def step(xb, yb):
        loss = ((model(xb).squeeze(1) - yb) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    result = lr_finder.range_test(step, opt, iter(lambda: (x, y), None), (model, opt), steps=100)
    assert len(result.lrs) < 100, "the loss explodes before the end of the sweep and it stops"
    assert 0.01 < result.suggestion < 2, "steepest descent lies where SGD converges fast"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.param_groups[0]["lr"] == 0.1


# ---------------------------------------------------------------------------------------- runs
def test_two_epoch_run_writes_checkpoints_metrics_events(data_dir, tmp_path):
    out = tmp_path / "run"
    proc = run("--data-dir", data_dir, "--out", out, "--epochs", 2, "--val-split", 0.1, *TINY)
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["epoch", "lr", "train", "loss", "train", "acc", "val", "loss",
                                "val", "acc", "test", "loss", "test", "acc", "img/s", "sec"]
    assert [line.split()[0] for line in lines[2:4]] == ["1", "2"]
    assert len({len(line) for line in lines[1:4]}) == 1, "rows are aligned with the header"
    assert lines[-1].startswith("done: best test acc")
    state = checkpoint.load(out / "last.pt")
    assert state["epoch"] == 2 and state["step"] == 0 and len(state["history"]) == 2
    assert [r["test_count"] for r in state["history"]] == [40, 40]  # every test image exactly once
    assert state["classes"][0] == "airplane" and state["config"]["model"] == "resnet18"
    assert (out / "best.pt").exists()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_acc" in rows[0]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # The file loads with weights_only=True: plain types and tensors only.
    torch.load(out / "last.pt", weights_only=True)


def test_find_lr_writes_plot_and_suggestion(data_dir, tmp_path):
    out = tmp_path / "lr"
    proc = run("--data-dir", data_dir, "--out", out, "--find-lr", "--find-lr-steps", 12, *TINY,
               "--batch-size", 8)
    assert (out / "lr_find.png").stat().st_size > 10_000
    suggestion = float(proc.stdout.split("suggested max LR ")[1].split()[0])
    assert 1e-6 <= suggestion <= 10
    assert not (out / "last.pt").exists(), "the range test does not train a run"


def test_kill_9_during_epoch_2_then_resume_is_exact(data_dir, reference, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "train.py", "--data-dir", str(data_dir), "--out",
                             str(out), "--epochs", "3", *TINY], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # inside epoch 2
    proc.kill()
    proc.wait()
    assert checkpoint.load(out / "last.pt")["epoch"] == 1
    run("--resume", out / "last.pt")
    ref, got = checkpoint.load(ref_out / "last.pt"), checkpoint.load(out / "last.pt")
    assert same_history(ref["history"], got["history"])
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])


def test_sigterm_mid_epoch_saves_and_resume_is_exact(data_dir, reference, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "train.py", "--data-dir", str(data_dir), "--out",
                             str(out), "--epochs", "3", *TINY], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr
    state = checkpoint.load(out / "last.pt")
    assert "resume with --resume" in stdout
    assert (state["epoch"], state["partial"] is not None) in {(1, True), (2, False)}
    run("--resume", out / "last.pt")
    ref, got = checkpoint.load(ref_out / "last.pt"), checkpoint.load(out / "last.pt")
    assert same_history(ref["history"], got["history"])
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])


# ---------------------------------------------------------------------------------- user mistakes
def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("args, words", [
    (["--epochs", "0"], "--epochs must be > 0"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--val-split", "1.5"], "--val-split must be in [0, 1)"),
    (["--model", "resnet50"], "invalid choice"),
    (["--optimizer", "lamb"], "invalid choice"),
    (["--lr", "fast"], "expected a number or 'auto'"),
    (["--resume", "missing.pt"], "does not exist"),
    (["--resume", "NOTCKPT"], "not a readable checkpoint"),
    (["--resume", "LAST", "--model", "resnet34"], "differs from the checkpoint's resnet18"),
    ([], "already holds a run"),
])
def test_bad_input_exits_2_with_one_line_and_checkpoint_untouched(reference, tmp_path, capsys,
                                                                 args, words):
    ref_out, _ = reference
    before = digest(ref_out / "last.pt")
    (tmp_path / "notckpt.pt").write_text("hello")
    args = [str(ref_out / "last.pt") if a == "LAST" else str(tmp_path / "notckpt.pt") if a == "NOTCKPT"
            else a for a in args]
    with pytest.raises(SystemExit) as exit_:  # in-process: these fail before any data is read
        cli.run(lambda: train.main(["--data-dir", str(tmp_path / "nodata"), "--out", str(ref_out),
                                    *TINY, *args]))
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err
    assert digest(ref_out / "last.pt") == before


def test_bad_flag_from_the_shell_has_no_traceback(tmp_path):
    proc = run("--out", tmp_path / "run", "--epochs", "-3", check=False)
    assert proc.returncode == 2 and proc.stderr == "error: --epochs must be > 0 (got -3)\n"
    assert not (tmp_path / "run").exists()


def test_missing_dataset_without_network_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    proc = run("--data-dir", tmp_path / "empty", "--out", out, *TINY, check=False,
               env={"PATH": "", "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "CIFAR-10 not found" in proc.stderr and "cifar-10-python.tar.gz" in proc.stderr
    assert not out.exists(), "nothing is written before the data is there"


def test_exploding_loss_stops_with_epoch_and_step(data_dir, tmp_path):
    out = tmp_path / "run"
    proc = run("--data-dir", data_dir, "--out", out, "--epochs", 1, "--lr", "1e12", "--scheduler",
               "none", *TINY, "--limit-train", 64, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "non-finite at epoch 1, step" in proc.stderr and "lower --lr" in proc.stderr
    assert not (out / "last.pt").exists()
