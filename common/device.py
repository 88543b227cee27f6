"""Which device a command runs on: one rule for train.py, viz.py and bench.py."""
import torch

from .cli import UsageError

CHOICES = ("auto", "cuda", "cpu")


def choose(name: str, local_rank: int = 0) -> torch.device:
    """auto: the GPU local_rank when CUDA is visible, else the CPU; cuda without a GPU is a user error."""
    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise UsageError("--device cuda but no CUDA GPU is visible: use --device cpu or auto")
    if name == "cpu" or not available:
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    return torch.device("cuda", local_rank)


def dali_id(device: torch.device) -> int | None:
    """The device_id a DALI pipeline takes for `device`: the GPU's index, None for DALI's CPU backend."""
    return (device.index or 0) if device.type == "cuda" else None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512_BF16 or AMX). Without it autocast's
    bf16 is emulated and slower than fp32 (measured: 19 img/s bf16 against 47 img/s fp32)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags

