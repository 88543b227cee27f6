# CIFAR-10 ResNet training with DALI on one or more NVIDIA GPUs.
#
#   docker build -t cifar-dali:0.1 .
#   mkdir -p data runs
#   docker run --rm --gpus all --ipc=host --user "$(id -u):$(id -g)" \
#       -v "$PWD/data:/data" -v "$PWD/runs:/runs" \
#       cifar-dali:0.1 train.py --epochs 20 --data-dir /data --out /runs/r18
#   ... cifar-dali:0.1 viz.py --checkpoint /runs/r18/last.pt
#   ... --entrypoint torchrun cifar-dali:0.1 --nproc_per_node=8 train.py --data-dir /data --out /runs/r18
#
# Base: PyTorch's official devel image for torch 2.14.1 (the version requirements.txt pins) built for
# CUDA 13.0 with cuDNN 9; it ships the matching torchvision (0.29.1). torch 2.14.1 from PyPI is the
# CUDA 13.0 build too, so the image and a `pip install -r requirements.txt` both pair it with the
# nvidia-dali-cuda130 wheel: one CUDA major per process. The host needs an NVIDIA driver >= 580.
# devel, not runtime: `train.py --compile` builds kernels at run time (Triton compiles its launchers
# with a C compiler against Python.h), and the runtime image has no compiler. The build checks below.
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-devel

# bash with pipefail, so that a failing command on the left of a pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project's other dependencies, at the versions requirements.txt pins.
# torch and torchvision are NOT installed again: the base image already has them, built for its CUDA.
# Reinstalling from PyPI would download several GB and could swap in a build for another CUDA (PyPI's
# default torch 2.14.1 wheel is CUDA 13 as well, but not necessarily the base's exact build). The constraints
# file holds pip to the base's own torch/torchvision, so no dependency (grad-cam asks for torch>=1.7.1)
# can replace them; the check afterwards fails the build if the base's versions are not the pinned ones.
# PIP_BREAK_SYSTEM_PACKAGES: recent bases may keep Python in Ubuntu's system location, which is marked as
# externally managed (PEP 668); this image is the only user of that Python, so pip may install there.
RUN python3 -m pip list --format=freeze | grep -E '^(torch|torchvision)==' > /tmp/base-constraints.txt \
 && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir -c /tmp/base-constraints.txt \
        nvidia-dali-cuda130==2.4.0 \
        grad-cam==1.5.7 \
        matplotlib==3.11.2 \
        tensorboard==2.21.0 \
        tqdm==4.70.1 \
        optuna==5.0.0 \
        psycopg2-binary==2.9.13 \
        sqlalchemy==2.1.9 \
        scipy==1.17.1 \
 && rm /tmp/base-constraints.txt \
 && python3 -c "import torch, torchvision; \
v = (torch.__version__.split('+')[0], torchvision.__version__.split('+')[0]); \
assert v == ('2.14.1', '0.29.1'), f'base image has torch/torchvision {v}, requirements.txt pins 2.14.1/0.29.1'; \
assert torch.version.cuda.startswith('13.'), f'base image torch is built for CUDA {torch.version.cuda}, nvidia-dali-cuda130 for CUDA 13: use a CUDA 13 base'; \
import nvidia.dali, pytorch_grad_cam, matplotlib, tensorboard, tqdm, optuna, psycopg2"

# A non-root user. UID 10001 stays clear of the "ubuntu" user (1000) that Ubuntu 24.04 images bring.
# HOME and MPLCONFIGDIR are writable by any UID (sticky, like /tmp), so `--user "$(id -u):$(id -g)"`
# (files in the bind mounts then belong to you) works as well: matplotlib, Triton and torch.compile
# keep their caches there.
ENV HOME=/home/trainer \
    MPLCONFIGDIR=/home/trainer/.config/matplotlib
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin trainer \
 && install -d -m 1777 /home/trainer /home/trainer/.config "$MPLCONFIGDIR" \
 && install -d -o trainer -g trainer -m 0775 /data /runs

# The code, owned by root and read-only to the user. Every top-level module and package is named here
# (tests/test_docker.py checks that against the repository, so a new module cannot be forgotten).
# The directory itself is writable by any UID (sticky) for files written to the working directory
# (bench.py's default bench.json); ./data and ./runs point at the mounts, so the defaults
# (--data-dir data, --out runs/resnet18) land there too.
WORKDIR /workspace
COPY pipeline/ ./pipeline/
COPY nets/ ./nets/
COPY common/ ./common/
COPY training/ ./training/
COPY explain/ ./explain/
COPY benchmark/ ./benchmark/
COPY sweeps/ ./sweeps/
COPY offline/ ./offline/
COPY train.py viz.py bench.py sweep.py ./
# torch.compile must be able to build its kernels, on the GPU and on the CPU: fail the build if not.
RUN python3 -c "import sys; from common.device import compile_problem; \
sys.exit(compile_problem('cuda') or compile_problem('cpu'))" \
 && chmod 1777 /workspace \
 && ln -s /data /workspace/data \
 && ln -s /runs /workspace/runs

# Numeric, so that the runtime (and Kubernetes' runAsNonRoot) can tell it is not root without /etc/passwd.
USER 10001:10001

# `docker run IMAGE train.py ...` runs `python3 train.py ...`; `--entrypoint torchrun` for several GPUs.
# python3 (not python): the name every base layout has (conda's and Ubuntu's system Python alike).
ENTRYPOINT ["python3"]
CMD ["train.py", "--help"]
