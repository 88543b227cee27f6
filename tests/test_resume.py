"""Runs that stop and go on: exact resume after kill -9, SIGTERM and a --batch-ramp batch change, a
finished run resumed, a run trained longer, and two runs on one directory (the lock)."""
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from common import device as devices
from common.cli import UsageError
from nets import checkpoint
from tests.conftest import (ROOT, SUBPROCESS_LIMIT, TRAINED, digest, fails, run_script, same_history,
                            same_weights)
from tests.test_lock import HOLDER
from training import Config, fit

# Tiny but real: 96 images in batches of 32 (3 steps an epoch), 40 test images, the precision auto picks.
TINY = ["--device", "cpu", "--batch-size", "32", "--limit-train", "96",
        "--limit-test", "40", "--ema", "0"]
CPU = torch.device("cpu")


def test_batch_ramp_run_resumes_exactly_across_a_batch_change(data_dir, tmp_path):
    """A plateau schedule does not depend on the run's length, so a 2-epoch run trained on to 3 with
    --resume continues at the batch its ramp reached and ends as the 3-epoch run does."""
    # threshold 0.99 (rel): no epoch improves enough, patience 0: every epoch's cut becomes a ramp.
    args = ["--data-dir", str(data_dir), *TINY, "--batch-size", "8", "--scheduler", "plateau", "--val-split",
            "0.2", "--plateau-patience", "0", "--plateau-factor", "0.5", "--plateau-threshold", "0.99",
            "--batch-ramp", "--lr", "0.05", "--limit-train", "40", "--limit-test", "16", "--no-tta"]
    train.main([*args, "--epochs", "3", "--out", str(tmp_path / "ref")])
    ref = checkpoint.load(tmp_path / "ref" / "last.pt")
    # Epoch 1 sets the plateau's best; epochs 2 and 3 each double the batch for the next (32 training
    # images: 4, 4, then 2 steps).
    assert [r["batch_size"] for r in ref["history"]] == [8, 8, 16] and ref["batch_size"] == 32
    assert {r["lr"] for r in ref["history"]} == {0.05}  # the LR was never cut
    assert len(ref["lr_steps"]) == 2 * (32 // 8) + 32 // 16
    train.main([*args, "--epochs", "2", "--out", str(tmp_path / "split")])
    assert checkpoint.load(tmp_path / "split" / "last.pt")["batch_size"] == 16
    train.main(["--resume", str(tmp_path / "split" / "last.pt"), "--epochs", "3"])  # epoch 3, at batch 16
    got = checkpoint.load(tmp_path / "split" / "last.pt")
    assert same_history(ref["history"], got["history"]) and same_weights(ref["model"], got["model"])


def test_resume_of_a_finished_run_says_so_and_a_run_without_onecycle_can_train_longer(
        trained_copy, data_dir, tmp_path, capsys):
    before = digest(trained_copy / "last.pt")
    train.main(["--resume", str(trained_copy / "last.pt")])
    said = capsys.readouterr().out
    assert said.startswith(f"{trained_copy} already finished its 3 epochs: done: final test acc ")
    assert said.rstrip().endswith("its OneCycle schedule has ended: start a new run with more --epochs and "
                                  "another --out to train longer") and digest(trained_copy / "last.pt") == before
    out = tmp_path / "run"
    first = fit(Config(data_dir=str(data_dir), out=str(out), epochs=1, scheduler="none", device="cpu",
                       batch_size=32, limit_train=80, val_split=0.2, keep_best=False,
                       limit_test=16, ema=0, tta=False))
    assert first.best is None and not (out / "best.pt").exists()  # --no-keep-best (sweeps): last.pt only
    longer = fit(Config(resume=str(out / "last.pt"), epochs=2))
    assert [r["epoch"] for r in longer.history] == [1, 2] and longer.history[0] == first.history[0]
    assert longer.config.epochs == 2 and checkpoint.load(out / "last.pt")["config"]["epochs"] == 2
    with pytest.raises(UsageError, match="--epochs 1: the checkpoint has already trained 2 epochs"):
        fit(Config(resume=str(out / "last.pt"), epochs=1))


@pytest.mark.precision
def test_bf16_autocast_on_the_cpu_resumes_bit_for_bit(data_dir, tmp_path, capsys):
    """bf16 on every CPU, natively or emulated (then ~10x slower than fp32: hence 2 images, 1 step an
    epoch): a run stopped after epoch 1 and resumed ends with the uninterrupted run's weights. Where
    it is emulated, the run says so."""
    tiny = dict(data_dir=str(data_dir), device="cpu", precision="bf16", channels_last=True, batch_size=2,
                limit_train=2, limit_test=2, scheduler="none", lr=0.02, ema=0, tta=False, keep_best=False)
    ref = fit(Config(out=str(tmp_path / "ref"), epochs=2, **tiny))
    notes = [line for line in capsys.readouterr().err.splitlines() if "bf16 is emulated" in line]
    assert notes == ([] if devices.cpu_has_native_bf16() else [f"note: {devices.emulated_bf16('bf16', CPU)}"])
    fit(Config(out=str(tmp_path / "split"), epochs=1, **tiny))
    got = fit(Config(resume=str(tmp_path / "split" / "last.pt"), epochs=2))
    assert got.config.precision == "bf16" and same_history(ref.history, got.history)
    final = [checkpoint.load(tmp_path / run / "last.pt") for run in ("ref", "split")]
    assert same_weights(final[0]["model"], final[1]["model"])
    assert final[0]["model"]["fc.weight"].dtype == torch.float32  # autocast: fp32 weights, bf16 compute


def wait_for_epoch(proc, out, epoch: int):
    """Until epoch `epoch`'s row is in metrics.csv (its checkpoint is written just before)."""
    while proc.poll() is None:
        if (out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) > epoch:
            return
        time.sleep(0.02)
    raise AssertionError(f"train.py exited ({proc.returncode}) before finishing epoch {epoch}")


def start_training(data_dir, out, *more, **kw):
    return subprocess.Popen([sys.executable, "train.py", "--data-dir", str(data_dir), "--out", str(out),
                             *TRAINED, *more], cwd=ROOT, **kw)


def test_a_run_on_a_directory_another_process_holds_stops_at_once_naming_it(data_dir, tmp_path, capsys):
    """train.py takes the run directory's lock first (common.lock; two processes racing for it:
    test_lock.py): another process's hold stops it in one line with that process's PID, exit 2."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert holder.stdout.readline() == "held\n"
    err = fails(train.main, ["--data-dir", data_dir, "--out", out, *TRAINED, "--epochs", "1"], capsys)
    assert err == (f"error: {out} is in use by another run (PID {holder.pid}): wait for it to finish, or pick "
                   "another --out\n")
    holder.stdin.close()
    assert holder.wait(SUBPROCESS_LIMIT) == 0 and not (out / "last.pt").exists()


def test_sigterm_then_kill_9_each_resumed_ends_exactly_as_the_uninterrupted_run(data_dir, trained_run, tmp_path):
    """SIGTERM mid-epoch 2: the run finishes its step, saves it and exits 143. Resumed, it is killed with
    kill -9 in a later epoch (no save: last.pt keeps the last finished epoch). Resumed again, it ends with
    the history and the bit-identical weights of the run that was never interrupted."""
    out = tmp_path / "run"
    proc = start_training(data_dir, out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_epoch(proc, out, 1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-2000:]
    state = checkpoint.load(out / "last.pt")
    assert "resume with --resume" in stdout
    assert (state["epoch"], state["partial"] is not None) in {(1, True), (2, False)}
    resumed = subprocess.Popen([sys.executable, "train.py", "--resume", str(out / "last.pt")], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_epoch(resumed, out, 2)
    resumed.kill()
    resumed.wait()
    assert checkpoint.load(out / "last.pt")["epoch"] == 2
    run_script("train.py", "--resume", out / "last.pt")  # the lock died with the killed process
    ref, got = checkpoint.load(trained_run / "last.pt"), checkpoint.load(out / "last.pt")
    assert same_history(ref["history"], got["history"]) and same_weights(ref["model"], got["model"])
