"""torchrun --nproc_per_node=2 on the CPU (gloo): sharded DALI pipelines, DDP, exact evaluation; two
"nodes" (two torchrun agents, c10d rendezvous) reach the same run as one node with two processes."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import nets
import pipeline
from nets import checkpoint
from pipeline.dali import TrainSource
from tests.conftest import ROOT, SUBPROCESS_LIMIT
from tests.test_pipeline import cpu_spec
from training import logits_of


@pytest.mark.parametrize("n, world", [(96, 2), (101, 3)])
def test_train_shards_are_disjoint_equal_and_cover_the_set(n, world):
    labels = np.arange(n)
    images = np.zeros((n, 32, 32, 3), np.uint8)
    for epoch in (0, 1):
        shards = [TrainSource(images, labels, cpu_spec(8, shard_id=r, num_shards=world)).draws(epoch)["index"]
                  for r in range(world)]
        seen = np.concatenate(shards)
        assert len(set(seen)) == len(seen) == world * (n // world)  # disjoint, equal sizes
        assert len({len(s) for s in shards}) == 1


def torchrun(*args, port):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            f"--master_port={port}", "train.py", *map(str, args)]


TINY = ["--device", "cpu", "--precision", "fp32", "--batch-size", "16", "--limit-train", "96",
        "--limit-test", "40", "--ema", "0.9"]  # an EMA too: its BatchNorm statistics are shared as well


@pytest.fixture(scope="module")
def two_ranks(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = subprocess.run(torchrun("--data-dir", data_dir, "--out", out, "--epochs", 2, *TINY, port=29517),
                          cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_LIMIT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_torchrun_two_ranks(data_dir, two_ranks):
    out, proc = two_ranks
    assert proc.stdout.count("done: final test acc") == 1, "only rank 0 logs"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "last.pt",
                                                     "metrics.csv", "tensorboard"]
    state = checkpoint.load(out / "last.pt")
    # 2 ranks x 3 batches of 16 = all 96 training images; 40 test images split 20 + 20, batches 16 + 4.
    assert [r["train_count"] for r in state["history"]] == [96, 96]
    assert [r["test_count"] for r in state["history"]] == [40, 40]
    # One process evaluating the saved weights gets the accuracy the two ranks reported together.
    model = nets.create("resnet18").eval()
    model.load_state_dict(state["model"])
    d = pipeline.load_cifar10(data_dir)
    test = pipeline.test_subset(d.test_labels, 40)  # the 40 images --limit-test 40 takes
    loader = pipeline.eval_loader(d.test_images[test], d.test_labels[test],
                                  cpu_spec(16, d.mean, d.std, channels_last=False))
    with torch.no_grad():  # as the run evaluated: with the mirror images (TTA)
        correct = sum(int((logits_of(model, x, state["config"]["tta"]).argmax(1) == y).sum()) for x, y in loader)
    assert correct / 40 == state["history"][-1]["test_acc"]


def test_torchrun_resume_after_kill_9(data_dir, two_ranks, tmp_path):
    ref_out, _ = two_ranks
    out = tmp_path / "run"
    proc = subprocess.Popen(torchrun("--data-dir", data_dir, "--out", out, "--epochs", 2, *TINY, port=29518),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while not (out / "metrics.csv").exists() and proc.poll() is None:  # epoch 1 done (or torchrun died)
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid epoch 2
    proc.wait()
    assert checkpoint.load(out / "last.pt")["epoch"] == 1
    done = subprocess.run(torchrun("--resume", out / "last.pt", port=29519), cwd=ROOT,
                          capture_output=True, text=True, timeout=SUBPROCESS_LIMIT)
    assert done.returncode == 0, done.stderr[-3000:]
    ref, got = checkpoint.load(ref_out / "last.pt"), checkpoint.load(out / "last.pt")
    keys = ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "train_count", "test_count")
    assert [[r[k] for k in keys] for r in got["history"]] == [[r[k] for k in keys] for r in ref["history"]]
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])


def node(rank, *args, port):
    """One of two "nodes" on this machine: its own torchrun agent with one process, meeting the other
    through c10d rendezvous as on two machines (the first agent there hosts the rendezvous store)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
            "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            "--rdzv-id=two-nodes", "train.py", *map(str, args)]


SPY = """import sys, torch
_compile = torch.compile
def compile(model, **kw):  # Dynamo's eager backend: the capture through DDP is real, no kernel builds
    print(f"torch.compile got {type(model).__name__}", file=sys.stderr, flush=True)
    return _compile(model, backend="eager", **kw)
torch.compile = compile
"""


def test_two_nodes_each_compiling_the_ddp_wrapped_model_train_the_run_of_one_node(data_dir, two_ranks, tmp_path):
    """Two "nodes" on this machine (two torchrun agents, c10d rendezvous, gloo), each rank with --compile,
    train bit for bit what one node with two eager processes trains. Each rank compiles the DDP-wrapped
    model (so DDP's all-reduce overlaps the compiled backward). Inductor's kernel builds take ~90 s a rank
    on these 2 cores, so a sitecustomize on the ranks' path hands torch.compile Dynamo's eager backend:
    the capture through DDP runs for real, the code generation does not (common.device.compile_problem
    checks what that needs)."""
    ref_out, _ = two_ranks
    (tmp_path / "spy").mkdir()
    (tmp_path / "spy" / "sitecustomize.py").write_text(SPY)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'spy'}{os.pathsep}{ROOT}"}
    out = tmp_path / "run"
    args = ["--data-dir", data_dir, "--out", out, "--epochs", 2, *TINY, "--compile"]
    nodes = [subprocess.Popen(node(rank, *args, port=29520), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    outputs = [n.communicate(timeout=SUBPROCESS_LIMIT) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [err[-3000:] for _, err in outputs]
    assert "".join(stdout for stdout, _ in outputs).count("done: final test acc") == 1, "only rank 0 logs"
    assert [err.count("torch.compile got DistributedDataParallel") for _, err in outputs] == [1, 1]
    ref, got = checkpoint.load(ref_out / "last.pt"), checkpoint.load(out / "last.pt")
    assert got["config"]["compile"] and not any(k.startswith(("_orig_mod.", "module.")) for k in got["model"])
    keys = ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "ema_test_acc", "train_count", "test_count")
    assert [[r[k] for k in keys] for r in got["history"]] == [[r[k] for k in keys] for r in ref["history"]]
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])
    assert all(torch.equal(ref["ema"][k], got["ema"][k]) for k in ref["ema"])
