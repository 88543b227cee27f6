# `make train` and `make test` each create .venv when it is missing (or requirements changed), then run.
# One environment for both: the project's requirements and the test tools (requirements-dev.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test bench viz gpu-check notebook gpu-kit
train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

# pytest exits 5 when it collects nothing: that fails here too, as any non-zero exit does.
# Every test runs one thread; one worker more than cores, because much of the suite waits on child
# processes (a Jupyter kernel, torchrun's rendezvous, PostgreSQL, a checkpoint to appear) and the extra
# worker fills those waits (measured: docs/tests.md). --dist loadscope
# keeps a module on one worker, so a module's shared run (the gpu-check smoke, the torchrun pair) is
# made once.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print((os.cpu_count() or 1) + 1)')
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope tests $(ARGS)

bench: $(VENV)/.installed
	$(PY) bench.py $(ARGS)

viz: $(VENV)/.installed
	$(PY) viz.py $(ARGS)

# Every GPU claim checked (tests/gpu_check.py), most valuable first; ARGS="--only full" runs one group,
# ARGS=--smoke the same steps tiny on the CPU. docs/gpu.md has the recipe for a bare GPU machine.
gpu-check: $(VENV)/.installed
	$(PY) tests/gpu_check.py $(ARGS)

# The committed course notebook, regenerated from a real run with a smaller budget (notebooks/render.py):
# make notebook ARGS="--data-dir /tmp/cifar-real --limit-train 5000 --limit-test 1000 --find-lr-steps 100"
notebook: $(VENV)/.installed
	$(PY) notebooks/render.py $(ARGS)

# The offline kit for a GPU machine without network (docs/gpu.md): DALI, grad-cam and their dependencies
# for its Python and platform (ARGS="--python 3.11 --cuda 12" for another), pruned, with the CIFAR-10
# JPEGs, xz-compressed into .gpu-kit/parts/ (each part fits one 64 MiB copy beside the repository) and
# SHA256SUMS. Needs the package index; about 10 minutes on 2 cores, most of it xz.
KIT_DATA ?= ../shared/data/cifar10-jpeg.tar.xz
gpu-kit: $(VENV)/.installed
	$(PY) -m offline build --data $(KIT_DATA) $(ARGS)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@
