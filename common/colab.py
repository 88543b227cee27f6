"""What a Colab runtime lacks to run this project, installed beside Colab's own torch (the notebook's
set-up cell calls install() after cloning the repository).

Colab ships its own torch, built for the CUDA its driver supports: installing this project's pinned torch
there would download GBs and may need a newer driver. So Colab's torch and torchvision stay, only the
requirements not installed at all are added, and DALI's wheel is the one built for torch's CUDA major
(one CUDA major per process)."""
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from .cli import UserError

DALI_WHEELS = {"12": "nvidia-dali-cuda120", "13": "nvidia-dali-cuda130"}  # torch's CUDA major -> DALI wheel
# A CPU-only torch: DALI's CPU backend runs with either wheel. This one is requirements.txt's, measured
# running CPU-only pipelines on machines without an NVIDIA driver.
CPU_DALI_WHEEL = DALI_WHEELS["13"]
KEPT = ("torch", "torchvision")  # Colab's own builds, matched to its driver: never replaced


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): grad_cam and Grad-CAM are grad-cam."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dali_wheel(torch_cuda: str | None) -> str:
    """The DALI wheel for a torch built for CUDA `torch_cuda` (torch.version.cuda: "12.4"; None for a
    CPU-only torch)."""
    if torch_cuda is None:
        return CPU_DALI_WHEEL
    major = torch_cuda.split(".")[0]
    if major not in DALI_WHEELS:
        supported = ", ".join(f"CUDA {m} ({wheel})" for m, wheel in DALI_WHEELS.items())
        raise UserError(f"this torch is built for CUDA {torch_cuda}; DALI is set up here for {supported} "
                        "only: use a runtime whose torch is built for one of them")
    return DALI_WHEELS[major]


def pip_arguments(requirements: str, torch_cuda: str | None, installed: dict) -> list:
    """What to pip-install, given requirements.txt's text and the installed distributions (canonical
    name -> version): each pin whose distribution is not installed at all (DALI's wheel matched to
    torch's CUDA), then the installed torch and torchvision pinned to their own versions, so that pip
    keeps them or fails instead of replacing them. [] when nothing is missing."""
    wanted = []
    for line in requirements.splitlines():
        pin = line.split("#")[0].strip()
        name = re.match(r"[A-Za-z0-9._-]*", pin).group()
        if not name or canonical(name) in KEPT:
            continue
        chosen = dali_wheel(torch_cuda) if canonical(name).startswith("nvidia-dali-") else name
        if canonical(chosen) not in installed:
            wanted.append(chosen + pin[len(name):])
    held = [f"{name}=={installed[name]}" for name in KEPT if name in installed]
    return wanted + held if wanted else []


def install(requirements: str = "requirements.txt") -> list:
    """pip-install what pip_arguments names for this runtime; returns those arguments."""
    import torch
    installed = {canonical(d.name): d.version for d in importlib.metadata.distributions() if d.name}
    arguments = pip_arguments(Path(requirements).read_text(), torch.version.cuda, installed)
    if arguments:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *arguments], check=True)
    return arguments
