"""The GPU path: DALI's GPU pipelines against its CPU backend, one resident copy per GPU, the torch-ops
loader, mixed precision, torch.compile, NCCL.

Every test marked `gpu` needs CUDA and is skipped, with the reason, without it; `tests/gpu_check.py`
runs them (with every other module's: `pytest -m gpu`) the first time a GPU is at hand. Some run
everywhere: the installed DALI wheel is built for torch's CUDA major, a batch the CPU loader returned
stays valid while later batches are produced, and common.device.compile_problem names what
torch.compile would lack. tests/test_dali_graphs.py checks every GPU pipeline's graph on the CPU.
"""
import csv
import dataclasses
import importlib.metadata
import math
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from common.device import compile_problem
from pipeline import MEAN, STD, BatchSpec, TensorLoader, eval_loader, train_loader
from tests.conftest import ROOT, write_cifar

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")

GPU0, CPU = torch.device("cuda", 0), torch.device("cpu")
MEAN_T = torch.tensor(MEAN).view(1, 3, 1, 1)
STD_T = torch.tensor(STD).view(1, 3, 1, 1)


# ------------------------------------------------------------------- one CUDA major per process
def dali_cuda_major(dist_names) -> int:
    """The CUDA major a DALI wheel is built for, from its distribution name: nvidia-dali-cuda130 -> 13."""
    found = [m.group(1) for m in (re.fullmatch(r"nvidia[-_]dali[-_]cuda(\d+)0", n.lower()) for n in dist_names)
             if m]
    assert len(found) == 1, f"expected one nvidia-dali-cuda* distribution installed, found {found or 'none'}"
    return int(found[0])


def cuda_major_problem(dist_names, torch_cuda: str):
    """None when the DALI wheel and torch use one CUDA major, else what is wrong and the fix."""
    dali, torch_major = dali_cuda_major(dist_names), int(torch_cuda.split(".")[0])
    if dali == torch_major:
        return None
    return (f"DALI is built for CUDA {dali}, torch for CUDA {torch_cuda}: install "
            f"nvidia-dali-cuda{torch_major}0 (two CUDA majors in one process)")


def test_installed_dali_wheel_matches_torch_cuda_major():
    if torch.version.cuda is None:
        pytest.skip(f"torch {torch.__version__} is a CPU-only build: no CUDA major to match")
    names = [d.metadata["Name"] for d in importlib.metadata.distributions()]
    assert cuda_major_problem(names, torch.version.cuda) is None


def test_cuda_major_check_can_fail():
    assert dali_cuda_major(["numpy", "nvidia-dali-cuda130"]) == 13
    assert dali_cuda_major(["nvidia_dali_cuda120"]) == 12
    assert cuda_major_problem(["nvidia-dali-cuda130"], "13.0") is None
    assert cuda_major_problem(["nvidia-dali-cuda120"], "13.0") == (
        "DALI is built for CUDA 12, torch for CUDA 13.0: install nvidia-dali-cuda130 (two CUDA majors in one process)")
    with pytest.raises(AssertionError, match="found none"):
        dali_cuda_major(["numpy"])


# ------------------------------------------------------------------------------------ pipelines
def random_set(n, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images, np.arange(n, dtype=np.int64)  # label = index: order and coverage are visible


def raw_pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised NCHW back to uint8 grey levels: fp16 error (< 0.2 level) is far below the 0.5 of rounding."""
    return ((x.float().cpu() * STD_T + MEAN_T) * 255).round().clamp(0, 255).to(torch.uint8)


def batches_of(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.gpu
@needs_cuda
def test_gpu_and_cpu_training_pipelines_draw_the_same_augmentation():
    images, labels = random_set(300)
    gpu = BatchSpec(MEAN, STD, 64, GPU0, torch.float16, seed=7)
    cpu = dataclasses.replace(gpu, device=CPU, dtype=torch.float32)
    for epoch in range(2):  # the draws change with the epoch, on both backends alike
        gpu_loader = train_loader(images, labels, gpu, start_epoch=epoch)
        cpu_loader = train_loader(images, labels, cpu, start_epoch=epoch)
        on_gpu, on_cpu = batches_of(gpu_loader), batches_of(cpu_loader)
        assert len(on_gpu) == len(on_cpu) == 300 // 64
        for (xg, yg), (xc, yc) in zip(on_gpu, on_cpu):
            assert xg.dtype == torch.float16 and xc.dtype == torch.float32
            assert torch.equal(yg.cpu(), yc)  # the same order
            # Same crop offsets, flips and cutout boxes: identical grey levels before normalisation.
            assert torch.equal(raw_pixels(xg), raw_pixels(xc))
            torch.testing.assert_close(xg.float().cpu(), xc, atol=2e-3, rtol=1e-3)  # fp16 rounding


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("n, batch", [(1000, 128), (257, 64), (63, 64)])
def test_gpu_eval_pipeline_covers_each_image_once(n, batch):
    images, labels = random_set(n)
    loader = eval_loader(images, labels, BatchSpec(MEAN, STD, batch, GPU0, torch.float16))
    for _ in range(2):  # and again on the next pass
        got = batches_of(loader)
        assert [len(y) for _, y in got] == [batch] * (n // batch) + ([n % batch] if n % batch else [])
        assert torch.cat([y for _, y in got]).tolist() == list(range(n))
        x = torch.cat([x for x, _ in got])
        assert torch.equal(raw_pixels(x), torch.from_numpy(images).permute(0, 3, 1, 2))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kind", ["train", "eval"])
def test_gpu_outputs_are_fp16_channels_last_on_the_device(kind):
    images, labels = random_set(256)
    loader = loader_of(kind, images, labels, BatchSpec(MEAN, STD, 64, GPU0, torch.float16))
    x, y = next(iter(loader))
    assert x.device == torch.device("cuda", 0) and y.device == torch.device("cuda", 0)
    assert x.dtype == torch.float16 and y.dtype == torch.int64
    assert x.shape == (64, 3, 32, 32) and y.shape == (64,)
    assert x.is_contiguous(memory_format=torch.channels_last)


def loader_of(kind: str, images, labels, spec: BatchSpec):
    return (train_loader if kind == "train" else eval_loader)(images, labels, spec)


def kept_batch_stays_valid(loader, later=6):
    """Keep the first batch, read `later` more (past DALI's prefetch queue), compare with a clone."""
    stream = iter(loader)
    x, y = next(stream)
    x_copy, y_copy = x.clone(), y.clone()
    for _ in range(later):
        next(stream)
    if x.is_cuda:
        torch.cuda.synchronize()
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy), "a returned batch was overwritten by a later one"


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_cpu_batches_stay_valid_while_later_ones_are_produced(kind):
    images, labels = random_set(512)
    loader = loader_of(kind, images, labels, BatchSpec(MEAN, STD, 32, CPU))
    kept_batch_stays_valid(loader)


def test_validity_check_can_fail():
    buffer = torch.zeros(4)

    def reusing_loader():  # hands out one buffer, overwritten for every batch
        for i in range(8):
            buffer.fill_(i)
            yield buffer, buffer

    with pytest.raises(AssertionError, match="overwritten by a later one"):
        kept_batch_stays_valid(reusing_loader())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kind", ["train", "eval"])
def test_gpu_batches_stay_valid_while_later_ones_are_produced(kind):
    images, labels = random_set(512)
    loader = loader_of(kind, images, labels, BatchSpec(MEAN, STD, 32, GPU0, torch.float16))
    kept_batch_stays_valid(loader)


@pytest.mark.gpu
@needs_cuda
def test_loaders_of_one_array_share_one_copy_on_the_gpu():
    """Train, eval and a batch-ramp rebuild of the same images: one resident copy (torch's allocator
    holds it; DALI's own buffers are not counted), freed when the loaders go."""
    images, labels = random_set(4096)  # 12.6 MB
    spec = BatchSpec(MEAN, STD, 64, GPU0, torch.float16)
    before = torch.cuda.memory_allocated(0)
    loaders = [train_loader(images, labels, spec), eval_loader(images, labels, spec),
               train_loader(images, labels, dataclasses.replace(spec, batch_size=128), start_epoch=1)]
    grown = torch.cuda.memory_allocated(0) - before
    assert images.nbytes <= grown < 1.5 * images.nbytes, (grown, images.nbytes)
    for loader in loaders:
        next(iter(loader))
    del loaders
    assert torch.cuda.memory_allocated(0) - before < images.nbytes / 2


@pytest.mark.gpu
@needs_cuda
def test_torch_ops_loader_on_the_gpu_resumes_exactly():
    images, labels = random_set(1024)
    spec = BatchSpec(MEAN, STD, 128, GPU0, torch.float16, seed=3)
    full = batches_of(TensorLoader(images, labels, spec, start_epoch=2))
    tail = batches_of(TensorLoader(images, labels, spec, start_epoch=2, start_step=5))
    x, y = full[0]
    assert x.device == y.device == torch.device("cuda", 0) and x.dtype == torch.float16 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert len(full) == 8 and len(tail) == 3
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(tail, full[5:]))
    halves = [batches_of(TensorLoader(images, labels, dataclasses.replace(spec, shard_id=rank, num_shards=2),
                                      start_epoch=2)) for rank in (0, 1)]
    seen = torch.cat([y for half in halves for _, y in half]).tolist()
    assert sorted(seen) == list(range(1024))  # disjoint shards covering the set


# ------------------------------------------------------------------------- train.py on the GPU
TINY_GPU = ["--device", "cuda", "--epochs", "1", "--limit-train", "512", "--limit-test", "256",
            "--batch-size", "128"]


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar") / "data", per_batch=128, n_test=256)


def run(command, **env):
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **env})
    assert proc.returncode == 0, f"{' '.join(map(str, command))} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def train(data_dir, out, *flags, launcher=(), **env):
    return run([sys.executable, *launcher, "train.py", "--data-dir", str(data_dir), "--out", str(out),
                *TINY_GPU, *flags], **env)


def assert_finite_run(out):
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1, rows
    for key in ("train_loss", "test_loss"):
        assert math.isfinite(float(rows[0][key])), rows[0]
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1
    # The checkpoint holds the bare model: no DDP ("module.") or torch.compile ("_orig_mod.") prefix.
    assert not [k for k in state["model"] if k.startswith(("module.", "_orig_mod."))]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("flags", [["--precision", "bf16"], ["--precision", "fp16"],
                                   ["--precision", "bf16", "--compile"],
                                   ["--precision", "bf16", "--loader", "torch"]],
                         ids=["bf16", "fp16-scaler", "compile", "torch-loader"])
def test_training_step_on_the_gpu(small_cifar, tmp_path, flags):
    if "--compile" in flags and compile_problem("cuda"):
        pytest.skip(compile_problem("cuda"))
    train(small_cifar, tmp_path / "run", *flags)
    assert_finite_run(tmp_path / "run")
    if "fp16" in flags:  # the gradient scaler took part: its state is saved with a scale
        scaler = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)["scaler"]
        assert scaler and scaler["scale"] > 0, scaler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.gpu
@needs_cuda
def test_ddp_over_nccl_with_one_process(small_cifar, tmp_path):
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={free_port()}"]
    proc = train(small_cifar, tmp_path / "run", launcher=launcher, NCCL_DEBUG="INFO")
    # NCCL_DEBUG=INFO makes NCCL announce itself when DDP's first collective creates its communicator.
    assert "NCCL version" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert_finite_run(tmp_path / "run")


# ------------------------------------------------------------------------ what torch.compile needs
@pytest.fixture
def bare_machine(monkeypatch, tmp_path):
    """A GPU machine with no compiler on PATH, no CC and a Python whose headers are in tmp_path/include."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("CC", "CXX"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "bin").mkdir()
    (tmp_path / "include").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    import common.device
    monkeypatch.setattr(common.device.sysconfig, "get_paths",
                        lambda scheme=None: {"include": str(tmp_path / "include")})
    return tmp_path


def test_compile_problem_names_the_missing_compiler_and_the_fix(bare_machine, monkeypatch):
    assert compile_problem("cuda") == ("torch.compile needs a C compiler for Triton on the GPU ($CC is unset and "
                                       "no gcc or clang is on PATH): install gcc or set CC, or leave out --compile")
    assert compile_problem() == compile_problem("cuda")  # auto: the GPU when one is visible
    assert compile_problem("cpu").startswith("torch.compile needs a C++ compiler on the CPU ($CXX is unset and "
                                             "no g++ is on PATH)")
    monkeypatch.setenv("CC", "/no/such/cc")
    assert "($CC=/no/such/cc is not an executable)" in compile_problem("cuda")


def test_compile_problem_names_missing_headers_then_nothing(bare_machine):
    gcc = bare_machine / "bin" / "gcc"
    gcc.write_text("#!/bin/sh\n")
    gcc.chmod(0o755)
    headers = bare_machine / "include" / "Python.h"
    assert compile_problem("cuda") == (f"torch.compile needs this Python's headers ({headers} is missing): install "
                                       f"python{sys.version_info.major}.{sys.version_info.minor}-dev (or your "
                                       "Python's headers), or leave out --compile")
    headers.write_text("")
    assert compile_problem("cuda") is None
    assert compile_problem("cpu").startswith("torch.compile needs a C++ compiler")  # the CPU needs g++
