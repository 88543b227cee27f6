"""Shared fixtures: a small synthetic CIFAR-10 written in the real `cifar-10-batches-py` pickle format,
one tiny trained run that every module needing a checkpoint shares, and helpers for running the
scripts in-process (where the shell boundary is not what is tested) or as a subprocess."""
import fcntl
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# One intra-op thread here and in every child process: tiny batches gain nothing from a second thread,
# and on a busy 2-core machine two threads wait on each other (several times slower). It also keeps runs made
# in-process and in a subprocess bit-identical.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.xz"
SUBPROCESS_LIMIT = 900  # seconds: only a hung child ever gets near it, however busy the machine
# The shared run: the defaults' precision (auto: bf16 where this CPU has it natively, else fp32: a CPU
# that emulates bf16 would take minutes) and channels-last, 3 epochs of 3 steps (96 images in batches of
# 32), 120 test images; it gets some of the tinted test images right and many wrong. No EMA and no
# test-time flips: the resume tests replay it, and their tests are elsewhere.
TRAINED = ["--device", "cpu", "--epochs", "3", "--batch-size", "32",
           "--limit-train", "96", "--limit-test", "120", "--lr", "0.02", "--ema", "0", "--no-tta"]


def write_cifar(root: Path, per_batch=100, n_test=1000, seed=0) -> Path:
    """Write data_batch_1..5, test_batch and batches.meta as CIFAR-10 distributes them (rows of
    3072 uint8 = R, G, B planes of 32 x 32). Each class has its own colour tint, so a model can learn."""
    rng = np.random.default_rng(seed)
    tints = rng.integers(0, 256, (10, 3))
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        noise = rng.integers(0, 256, (n, 3, 32, 32))
        images = (noise + tints[labels][:, :, None, None]) // 2
        return {"batch_label": "synthetic", "labels": labels.tolist(),
                "data": images.reshape(n, 3072).astype(np.uint8),
                "filenames": [f"{i}.png" for i in range(n)]}

    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        with open(batches / name, "wb") as f:
            pickle.dump(batch(n), f, protocol=2)
    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f,
                    protocol=2)
    return root


def same_history(a, b):
    keys = ("epoch", "lr", "batch_size", "train_loss", "train_acc", "test_loss", "test_acc", "test_count")
    return [{k: r.get(k) for k in keys} for r in a] == [{k: r.get(k) for k in keys} for r in b]


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def need_archive():
    """The real CIFAR-10 JPEGs beside the checkout: skipped where they are absent, but a failure in
    CI (CI=true), which keeps shared/ beside the clone: there, absence means something broke."""
    if ARCHIVE.exists():
        return
    message = f"{ARCHIVE} not found (the real CIFAR-10 JPEGs; CI keeps shared/ beside the clone)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def run_script(script: str, *args, check=True, env=None, cwd=ROOT) -> subprocess.CompletedProcess:
    """python SCRIPT ARGS in a child process, for what only a shell sees: exit codes, signals."""
    command = [sys.executable, str(ROOT / script), *map(str, args)]
    try:
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_LIMIT,
                              env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(command)} still ran after {SUBPROCESS_LIMIT} s; its last "
                             f"output: {(e.stderr or b'')[-2000:]!r}") from None
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def fails(main, argv, capsys) -> str:
    """Run an entry point's main in-process as its __main__ does; returns the one `error:` line of a user
    mistake (the last on stderr, after any notes), checking the exit code 2 and that there is no traceback."""
    from common import cli
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: main([str(a) for a in argv]))
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: ") and err.count("error: ") == 1, err
    assert "Traceback" not in err and not any(line.startswith(" ") for line in lines), err
    return lines[-1] + "\n"


@pytest.fixture
def cifar_dir(tmp_path):
    return write_cifar(tmp_path / "data")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One synthetic CIFAR-10 (500 training, 200 test images) for the whole session."""
    return write_cifar(tmp_path_factory.mktemp("cifar") / "data", n_test=200)


@pytest.fixture(scope="session")
def trained_run(data_dir, tmp_path_factory, worker_id):
    """The run directory of one tiny real training run (TRAINED), made in-process once per session and
    shared by every test that only needs a checkpoint: under pytest-xdist the first worker to ask trains
    it while the others wait, then all read it. Tests must not write into it, nor lock it (a test that
    runs train.py on it uses trained_copy)."""
    import train
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    out = shared / "trained" / "run"
    with open(shared / "trained.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (out / "last.pt").exists():
            train.main(["--data-dir", str(data_dir), "--out", str(out), *TRAINED])
    return out


@pytest.fixture
def trained_copy(trained_run, tmp_path):
    """A run directory of this test's own holding the shared run's last.pt."""
    copy = tmp_path / "trained"
    copy.mkdir()
    shutil.copy(trained_run / "last.pt", copy / "last.pt")
    return copy


# Modules that take longest run first: pytest-xdist's loadscope hands modules to its workers in
# collection order, so a long module collected last (alphabetically, test_train and test_viz) ran alone
# at the end while the other core idled.
LONGEST_FIRST = ["test_gpu_check", "test_distributed", "test_train", "test_resume", "test_viz", "test_offline_kit",
                 "test_sweep", "test_folder", "test_notebook", "test_bench"]


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.stem
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: each module's own order stays
