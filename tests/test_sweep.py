"""sweep.py: a grid x seeds on Optuna, each trial a run directory made by fit; two workers on SQLite and
on a real PostgreSQL, a worker killed with kill -9 and its trial resumed, the summary's statistics and
choice on validation, TensorBoard HParams, bad input before any trial runs."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from statistics import fmean, stdev

import optuna
import pytest
from scipy.stats import t as student_t
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import sweep
from common.cli import UsageError
from nets import checkpoint
from sweeps import plan as plans, study as studies, summary
from tests.conftest import ROOT, SUBPROCESS_LIMIT, fails

# One step of 16 images an epoch, 8 validation and 8 test images, the precision auto picks: seconds a trial.
TINY = ["--device", "cpu", "--epochs", "1", "--batch-size", "16", "--limit-train", "24",
        "--limit-test", "8", "--val-split", "0.34", "--scheduler", "none", "--no-tta", "--ema", "0"]
GRID = ["--grid", "lr=0.01,0.02", "--seeds", "2"]  # 4 trials
HEARTBEAT = ["--heartbeat", "1"]  # a killed worker's trial is stale after 2 s
# sweeps.study silences Optuna's notes on its experimental heartbeat for users; pytest shows them again.
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")]


def run_sweep(*args):
    sweep.main([str(a) for a in args])  # in-process: the shell is not what is tested here


def trials(out, url=None):
    study = optuna.load_study(study_name=out.name, storage=url or f"sqlite:///{out / 'study.db'}")
    return study.get_trials()


def describe_lines(run):
    """The describing line fit prints once per start (new or resumed) of a run."""
    return [line for line in (run / "train.log").read_text().splitlines() if line.startswith("resnet18 on cpu")]


def check_grid_ran_once(out, url, stdout):
    """Every (setting, seed) trained by exactly one trial from start to end; the summary and HParams."""
    everything = trials(out, url)
    done = [t for t in everything if t.state == optuna.trial.TrialState.COMPLETE]
    # Two workers may draw the same point at once: the later one gives way (PRUNED) before training.
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in everything if t not in done)
    names = sorted(t.user_attrs["run"] for t in done)
    assert names == ["lr=0.01,seed=0", "lr=0.01,seed=1", "lr=0.02,seed=0", "lr=0.02,seed=1"]
    for t in done:
        run = out / t.user_attrs["run"]
        assert len(describe_lines(run)) == 1, "trained once, never restarted or taken twice"
        state = checkpoint.load(run / "last.pt")
        assert (state["epoch"], state["config"]["lr"], state["config"]["seed"]) == (1, t.params["lr"], t.params["seed"])
        assert t.value == state["history"][-1]["val_acc"] == t.user_attrs["val_acc"]  # chosen on validation
        assert t.user_attrs["test_acc"] == state["history"][-1]["test_acc"]
        assert hparams_of(run) == {"lr": t.params["lr"], "seed": t.params["seed"]}
    saved = json.loads((out / "summary.json").read_text())
    for row in saved["settings"]:
        values = [t.user_attrs["val_acc"] for t in done if t.params["lr"] == row["setting"]["lr"]]
        half = student_t.ppf(0.975, 1) * stdev(values) / 2 ** 0.5
        assert row["n"] == 2 and row["val_acc"]["mean"] == pytest.approx(fmean(values))
        assert row["val_acc"]["high"] == pytest.approx(min(1.0, fmean(values) + half))  # clipped to [0, 1]
        assert row["val_acc"]["low"] == pytest.approx(max(0.0, fmean(values) - half))
    assert saved["difference"]["seeds"] == [0, 1] and saved["leader"] is not None
    named = saved["difference"]["low"] > 0  # the paired interval excludes 0: only then a best
    assert saved["best"] == (saved["leader"] if named else None)
    assert ("best by validation: " if named else "no setting distinguishable by validation: ") in stdout
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("lr,n,failed,val_acc_mean,val_acc_low")
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "chosen on validation accuracy" in stdout
    assert "test accuracy is reported beside it and never chooses" in stdout


def hparams_of(run) -> dict:
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    return {k: v.number_value for k, v in values.items()}


def test_two_workers_on_sqlite_run_each_trial_once(data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    run_sweep("--name", "grid", "--out", out, "--workers", "2", *GRID, "--", "--data-dir", data_dir, *TINY)
    check_grid_ran_once(out, None, capsys.readouterr().out)


def test_a_worker_killed_mid_trial_is_resumed_from_its_last_checkpoint(data_dir, tmp_path, capsys):
    out = tmp_path / "killed"
    args = ["--name", "killed", "--out", out, "--seeds", "2", *HEARTBEAT, "--", "--data-dir", data_dir, *TINY,
            "--epochs", "2", "--lr", "0.01"]
    proc = subprocess.Popen([sys.executable, "sweep.py", *map(str, args)], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not any(out.glob("*/metrics.csv")) and proc.poll() is None:  # its first trial finished epoch 1
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # mid epoch 2 of that trial
    proc.wait(SUBPROCESS_LIMIT)
    killed = next(out.glob("*/metrics.csv")).parent
    before = checkpoint.load(killed / "last.pt")
    assert before["epoch"] == 1 and len(before["history"]) == 1
    run_sweep(*args)  # the same command again; its trial is stale after 2 s without a heartbeat
    done = trials(out)
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["run"] for t in complete) == ["seed=0", "seed=1"]  # each point once
    [failed] = [t for t in done if t.state == optuna.trial.TrialState.FAIL]  # the killed attempt
    [retry] = [t for t in complete if t.user_attrs["run"] == killed.name]
    assert failed.user_attrs["run"] == killed.name and "error" not in failed.user_attrs
    assert retry.system_attrs["failed_trial"] == failed.number and retry.params == failed.params
    after = checkpoint.load(killed / "last.pt")
    assert after["epoch"] == 2 and after["history"][0] == before["history"][0]  # continued, not restarted
    assert [line.endswith("resumed at epoch 2") for line in describe_lines(killed)] == [False, True]
    assert "resumes from its last.pt (1 of 2 epochs done)" in capsys.readouterr().out


@pytest.fixture
def postgres(tmp_path):
    """A real PostgreSQL server for the test (pgserver ships its binaries), removed afterwards."""
    pgserver = pytest.importorskip("pgserver")
    try:
        server = pgserver.get_server(tmp_path / "pg", cleanup_mode="delete")
        url = server.get_uri()
    except Exception as e:  # noqa: BLE001 (any reason the server cannot start is a reason to skip)
        pytest.skip(f"a PostgreSQL server could not start here: {e}")
    yield url
    server.cleanup()


def test_two_workers_share_a_postgresql_study(data_dir, tmp_path, postgres, capsys):
    out = tmp_path / "grid"
    run_sweep("--name", "grid", "--out", out, "--workers", "2", "--storage", postgres, *GRID, "--",
              "--data-dir", data_dir, *TINY)
    check_grid_ran_once(out, postgres.replace("postgresql://", "postgresql+psycopg2://"), capsys.readouterr().out)
    assert not (out / "study.db").exists()


def finished(lr: float, seed: int, val: float, test: float) -> optuna.trial.FrozenTrial:
    """A trial as a worker leaves it, without training."""
    choices = {"lr": optuna.distributions.CategoricalDistribution([0.01, 0.02]),
               "seed": optuna.distributions.CategoricalDistribution([0, 1, 2])}
    return optuna.trial.create_trial(params={"lr": lr, "seed": seed}, distributions=choices, value=val,
                                     user_attrs={"val_acc": val, "test_acc": test, "seconds": 1.0})


def report_of(tmp_path, capsys, results: dict) -> tuple:
    """summary.report on trials with these {lr: [(val, test) per seed]}: (printed text, summary.json)."""
    plan = plans.Plan("made", tmp_path / "made", {"lr": [0.01, 0.02]}, len(results[0.01]), {})
    study = optuna.create_study(direction="maximize")
    for lr, seeds in results.items():
        for seed, (val, test) in enumerate(seeds):
            study.add_trial(finished(lr, seed, val, test))
    summary.report(study, plan)
    return capsys.readouterr().out, json.loads((plan.dir / "summary.json").read_text())


def test_an_exact_tie_names_no_best_and_intervals_stay_within_0_and_100(tmp_path, capsys):
    # Both settings right on 0 and 15 % of the validation images, seed by seed: a tie, however wide.
    text, saved = report_of(tmp_path, capsys, {0.01: [(0.0, 0.1), (0.15, 0.2)], 0.02: [(0.0, 0.1), (0.15, 0.2)]})
    assert "no setting distinguishable by validation: lr=0.01 minus lr=0.02 on the same seeds (0, 1): +0.00 " \
           "points [+0.00, +0.00]; its 95 % interval includes 0" in text
    assert "best by validation" not in text and saved["best"] is None and saved["leader"] == {"lr": 0.01}
    assert "| 7.50 % [0.00, 100.00] |" in text  # mean +- 95.3 points, clipped to what accuracy can be
    for row in saved["settings"]:
        assert (row["val_acc"]["low"], row["val_acc"]["high"]) == (0.0, 1.0)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "made" / "summary.csv").read_text())))
    assert all(0 <= float(r[k]) <= 1 for r in rows for k in ("val_acc_low", "val_acc_high", "test_acc_low"))
    assert (tmp_path / "made" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("results, best", [
    ({0.01: [(0.40, 0.9), (0.52, 0.9), (0.44, 0.9)], 0.02: [(0.50, 0.1), (0.60, 0.1), (0.55, 0.1)]}, {"lr": 0.02}),
    # Higher on average, but only thanks to one seed: seed by seed the difference goes both ways.
    ({0.01: [(0.90, 0.5), (0.10, 0.5), (0.50, 0.5)], 0.02: [(0.50, 0.5), (0.40, 0.5), (0.45, 0.5)]}, None),
])
def test_the_best_setting_is_chosen_on_validation_only_when_the_paired_interval_excludes_0(tmp_path, capsys,
                                                                                           results, best):
    text, saved = report_of(tmp_path, capsys, results)
    assert saved["best"] == best
    if best:  # chosen on validation though its test accuracy is the worse
        assert "best by validation: lr=0.02: val 55.00 % [" in text and "lr=0.02 minus lr=0.01 on the same seeds " \
                                                                     "(0, 1, 2): +9.67 points [+" in text
    else:
        assert saved["leader"] == {"lr": 0.01} and "no setting distinguishable" in text
    one = summary.interval([0.5])
    assert (one["mean"], one["low"], one["high"]) == (0.5, None, None)  # one seed: no interval


@pytest.mark.parametrize("argv, says", [
    (["--grid", "lrr=0.1,0.2"], "--grid lrr=0.1,0.2: train.py has no option --lrr (did you mean --lr?)"),
    (["--grid", "learning_rate=0.1"], "--grid learning_rate=0.1: train.py has no option --learning-rate (did you "
                                      "mean --lr?)"),
    (["--grid", "wd=0,5e-4"], "--grid wd=0,5e-4: train.py has no option --wd (did you mean --weight-decay?)"),
    (["--", "--bs", "8"], "train.py options after --: unrecognized arguments: --bs 8 (did you mean --batch-size?)"),
    (["--grid", "epochs=2,three"], "--grid epochs=three: argument --epochs: invalid int value: 'three'"),
    (["--grid", "optimizer=sgd,adamax"], "--grid optimizer=adamax: argument --optimizer: invalid choice"),
    (["--grid", "tta=maybe"], "--grid tta=maybe: --tta is a switch: use true or false"),
    (["--grid", "lr="], "--grid lr=: no values, so a grid of zero trials"),
    (["--seeds", "0"], "--seeds 0: a grid of zero trials"),
    (["--grid", "seed=1,2"], "--grid seed: seeds are the sweep's --seeds"),
    (["--grid", "optimizer=nesterov", "--", "--momentum", "0"],
     "the trial optimizer=nesterov seed=0: --optimizer nesterov needs --momentum > 0"),
    (["--", "--epochz", "2"], "train.py options after --: unrecognized arguments: --epochz 2 (did you mean "
                              "--epochs?)"),
    (["--", "--out", "x"], "--out after --: each trial's run directory is the sweep's"),
    (["--", "--val-split", "0"], "--val-split 0: a sweep chooses on validation accuracy"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "--storage postgresql+psycopg2://nobody@127.0.0.1:1/none: "
                                                           "cannot open it (connection to server at"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_trial(data_dir, tmp_path, capsys, argv, says):
    out = tmp_path / "bad"
    ours, theirs = sweep.sweeps.split_argv(argv)
    line = fails(sweep.main, ["--name", "bad", "--out", out, *ours, "--", "--data-dir", data_dir, *TINY, *theirs],
                 capsys)
    assert line.startswith(f"error: {says}"), line
    assert not out.exists() or not [p for p in out.iterdir() if p.is_dir()], "no trial ran"


def test_a_second_command_under_the_same_name_must_sweep_the_same_grid(data_dir, tmp_path, capsys):
    out = tmp_path / "same"
    first = plans.make("same", str(out), ["lr=0.01"], 1, ["--data-dir", str(data_dir), *TINY])
    out.mkdir()
    studies.open_study(first, studies.connect(studies.url_of("", first), 1))
    line = fails(sweep.main, ["--name", "same", "--out", out, "--grid", "lr=0.02", "--seeds", "1", "--",
                              "--data-dir", data_dir, *TINY], capsys)
    assert line.startswith("error: sweep same in sqlite:///") and "was started as '--grid lr=0.01 --seeds 1" in line


def test_a_run_directory_another_process_holds_is_not_trained_twice(data_dir, tmp_path):
    """The double take: a trial whose run directory is locked by a live process (the run-directory lock,
    common/lock.py) fails with the holder's PID and trains nothing there."""
    pytest.importorskip("common.lock", reason="common/lock.py (the run-directory lock) has not landed yet")
    out = tmp_path / "held"
    run = out / "seed=0"
    run.mkdir(parents=True)
    hold = ("import sys\nfrom common import lock\nwith lock.hold(sys.argv[1]):\n"
            "    print('held', flush=True)\n    sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        run_sweep("--name", "held", "--out", out, "--seeds", "1", "--", "--data-dir", data_dir, *TINY)
    finally:
        holder.communicate("", timeout=SUBPROCESS_LIMIT)  # stdin closed: the holder lets go and exits
    [attempt] = trials(out)
    assert attempt.state == optuna.trial.TrialState.FAIL and str(holder.pid) in attempt.user_attrs["error"]
    assert not (run / "last.pt").exists() and describe_lines(run) == []


def test_workers_are_pinned_one_per_gpu_and_share_the_cores(monkeypatch):
    from sweeps import launch
    monkeypatch.setattr(launch.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(launch.torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")  # the GPUs this machine lends the sweep
    workers = launch.environments(2, "auto")
    assert [(label, env["CUDA_VISIBLE_DEVICES"]) for label, env in workers] == [("[gpu 2] ", "2"), ("[gpu 5] ", "5")]
    with pytest.raises(UsageError, match=r"^--workers 3: 2 GPU\(s\) visible and a worker takes one"):
        launch.environments(3, "auto")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in launch.environments(4, "cuda")] == ["0", "1", "2", "3"]
    on_cpu = launch.environments(2, "cpu")  # --device cpu: no GPU pinned, the cores split between them
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    expected = [("[worker 0] ", threads, False), ("[worker 1] ", threads, False)]
    assert [(label, env["OMP_NUM_THREADS"], "CUDA_VISIBLE_DEVICES" in env) for label, env in on_cpu] == expected
