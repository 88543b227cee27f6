"""One process per GPU under torchrun: the process group, DDP, and totals summed over ranks.

Under torchrun the process group is always joined, one process included, so a one-GPU torchrun run
takes the same DDP path as eight. The backend follows the run's device (NCCL for GPU tensors, gloo
for CPU tensors), not what the host happens to have.
"""
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common import device as devices


@dataclass(frozen=True)
class Process:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 alone prints, writes checkpoints and metrics."""
        return self.rank == 0


def start(device_name: str, deterministic: bool = False) -> Process:
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = devices.choose(device_name, local_rank)
    if deterministic:
        deterministic_kernels()
    if device_name == "auto" and device.type == "cpu":
        print("warning: no GPU found, training on the CPU (slow); --device cpu silences this",
              file=sys.stderr, flush=True)
    if "LOCAL_RANK" in os.environ and not dist.is_initialized():  # launched by torchrun
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Process(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), local_rank, device)


def deterministic_kernels():
    """--deterministic: cuDNN's deterministic algorithms, no autotuning (its choice can differ run to run),
    deterministic cuBLAS workspaces; a kernel with no deterministic version warns, naming itself."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def wrap(model: torch.nn.Module, process: Process) -> torch.nn.Module:
    if not active():
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[process.local_rank] if process.device.type == "cuda" else None)


def total(sums: torch.Tensor) -> list:
    """A small tensor of totals summed over all ranks, as Python numbers (one host sync)."""
    if active():
        dist.all_reduce(sums)
    return sums.tolist()


def most(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over all ranks (in place)."""
    if active():
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def share_buffers(model: torch.nn.Module):
    """BatchNorm running statistics drift apart per rank: everyone takes rank 0's, the ones it saves."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def finish():
    if active():
        dist.destroy_process_group()
