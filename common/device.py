"""Which device a command runs on (one rule for train.py, viz.py and bench.py), one resident copy of a
host array on it, and whether torch.compile can build its kernels here. torch is imported where it is
used: the option lists that name the devices load without it."""
from __future__ import annotations

import os
import shutil
import sysconfig
import weakref
from pathlib import Path

from .cli import UsageError

CHOICES = ("auto", "cuda", "cpu")


def choose(name: str, local_rank: int = 0) -> torch.device:
    """auto: the GPU local_rank when CUDA is visible, else the CPU; cuda without a GPU is a user error."""
    import torch
    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise UsageError("--device cuda but no CUDA GPU is visible: use --device cpu or auto")
    if name == "cpu" or not available:
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    return torch.device("cuda", local_rank)


# Set to "emulated" to run as on a CPU without native bf16 (most laptops, many CI runners), whatever this
# one has: precision "auto" then picks fp32 and tests expect it, so CI shows what such a machine sees.
BF16_SWITCH = "CIFAR_DALI_CPU_BF16"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512_BF16 or AMX). Without them autocast's
    bf16 is emulated in software, many times slower than fp32."""
    if os.environ.get(BF16_SWITCH) == "emulated":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def emulated_bf16(precision: str, device: torch.device) -> str | None:
    """A note when bf16 on this device would be emulated (the CPU lacks it), else None."""
    if precision != "bf16" or device.type != "cpu" or cpu_has_native_bf16():
        return None
    return ("bf16 is emulated on this CPU (it has no avx512_bf16 or AMX): ~10x slower than fp32 (measured "
            "on an AVX2-only EPYC); use --precision fp32, or auto")


_RESIDENT = {}  # (id(array), device, prepare) -> (weak ref to the array, weak ref to its device tensor)


def resident(array: np.ndarray, device: torch.device, prepare=None) -> torch.Tensor:
    """The host array on `device`, copied once and shared by every holder (the train, test and
    validation loaders, the LR finder's, each batch-ramp rebuild) while any of them keeps it; the same
    array object and device give the same tensor. prepare(tensor) -> tensor derives a store from the
    copy (cached under its own key). The array is taken as read-only: change it and build anew."""
    import torch
    key = (id(array), str(device), prepare)
    array_ref, tensor_ref = _RESIDENT.get(key, (None, None))
    tensor = tensor_ref() if array_ref is not None and array_ref() is array else None
    if tensor is None:
        tensor = torch.from_numpy(array).to(device)
        tensor = prepare(tensor) if prepare else tensor
        _RESIDENT[key] = (weakref.ref(array), weakref.ref(tensor))
        for stale in [k for k, (a, t) in _RESIDENT.items() if a() is None or t() is None]:
            del _RESIDENT[stale]  # their array or every holder is gone: the memory is already free
    return tensor


def compile_problem(device="auto") -> str | None:
    """Why torch.compile cannot build its kernels here, in one line with the fix, or None. Inductor
    compiles native code at run time: for a GPU, Triton builds its kernel launchers with a C compiler
    ($CC, else gcc, else clang); for the CPU, Inductor builds its C++ kernels ($CXX, else g++); both
    include this interpreter's Python.h. device: "cuda" (a GPU's needs, visible or not: a Docker build
    checks them), "cpu", or "auto" (the GPU's when CUDA is visible)."""
    import torch
    gpu = str(device).startswith("cuda") or (str(device) == "auto" and torch.cuda.is_available())
    language, variable, fallbacks = ("C", "CC", ("gcc", "clang")) if gpu else ("C++", "CXX", ("g++",))
    named = os.environ.get(variable)
    compiler = named or next((c for c in fallbacks if shutil.which(c)), None)
    if compiler is None or shutil.which(compiler) is None:
        what = f"${variable}={named} is not an executable" if named else (
            f"${variable} is unset and no {' or '.join(fallbacks)} is on PATH")
        return (f"torch.compile needs a {language} compiler {'for Triton on the GPU' if gpu else 'on the CPU'}"
                f" ({what}): install {fallbacks[0]} or set {variable}, or leave out --compile")
    scheme = sysconfig.get_default_scheme()  # Triton's rule: Debian's posix_local means posix_prefix
    include = Path(sysconfig.get_paths(scheme="posix_prefix" if scheme == "posix_local" else scheme)["include"])
    if not (include / "Python.h").is_file():
        version = sysconfig.get_python_version()
        return (f"torch.compile needs this Python's headers ({include / 'Python.h'} is missing): install "
                f"python{version}-dev (or your Python's headers), or leave out --compile")
    return None
