"""Regenerate the committed notebooks/course.ipynb from a real run, in one command: execute it in a
Jupyter kernel with a smaller budget in a cell after its `parameters` cell (papermill's convention),
then drop that cell again, so that the committed copy runs the course's budget when run unchanged, and
state the run's budget and accuracy in its first cell, above the outputs they produced.

  make notebook ARGS="--data-dir /tmp/cifar-real --limit-train 5000 --limit-test 1000 --find-lr-steps 100"
  # /tmp/cifar-real: python -m offline convert ../shared/data/cifar10-jpeg.tar.xz /tmp/cifar-real (docs/data.md)
"""
import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

NOTEBOOK = Path(__file__).with_name("course.ipynb")
RUN_NOTE = "**The outputs below come from"  # the first cell's paragraph this tool writes
CELL_TIMEOUT = 4 * 3600  # seconds: 20 epochs on a CPU take a while; only a hung cell gets near it


def with_parameters(nb: nbformat.NotebookNode, values: dict) -> nbformat.NotebookNode:
    """papermill's convention: any earlier `injected-parameters` cell goes, a new one follows the cell
    tagged `parameters`."""
    cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    injected = new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()),
                             metadata={"tags": ["injected-parameters"]})
    nb.cells = cells[:at + 1] + [injected] + cells[at + 1:]
    return nb


def run_note(budget: dict, summary: str, minutes: float, machine: str) -> str:
    """The first cell's paragraph on the run whose outputs the notebook shows."""
    raw, ema = re.search(r"final test acc (\d+\.\d\d)% \(raw weights.*?, (\d+\.\d\d)% \(EMA weights", summary).groups()
    return (f"{RUN_NOTE} a CPU run of the course's 20 epochs on a subset**: ResNet18 on "
            f"{budget['limit_train']:,} of the real CIFAR-10 training images (every class in its share; the "
            f"JPEG copy in `../shared/data`, whose accuracies come out a little below the canonical pixels'), "
            f"batch {budget['batch_size']}, tested on {budget['limit_test']:,} test images, after a "
            f"{budget['find_lr_steps']}-step LR range test, on {machine}: {minutes:.0f} minutes for the whole "
            f"notebook. It reached a **final test accuracy of {raw} % (raw weights) and {ema} % (EMA weights)**, "
            "flip TTA, on those images. Run unchanged, the notebook trains the course's budget: all 50,000 "
            "training images, tested on all 10,000 (on a GPU where there is one).")


def render(budget: dict, machine: str):
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), budget)
    started = time.monotonic()
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    summary = next("".join(o.get("text", "") for o in c.outputs) for c in nb.cells
                   if c.cell_type == "code" and "print(result.summary)" in c.source)
    first = nb.cells[0].source.split("\n\n")
    kept = [p for p in first if not p.startswith(RUN_NOTE)]
    nb.cells[0].source = "\n\n".join(kept[:2] + [run_note(budget, summary, (time.monotonic() - started) / 60,
                                                          machine)] + kept[2:])
    nbformat.write(nb, NOTEBOOK)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="cifar-10-batches-py of the real pixels (docs/data.md)")
    p.add_argument("--run-dir", default="runs/notebook-render", help="a new directory for the run")
    p.add_argument("--limit-train", type=int, default=5000)
    p.add_argument("--limit-test", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--find-lr-steps", type=int, default=200)
    p.add_argument("--machine", default="a 2-core CPU", help="where it ran, for the first cell")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    budget = dict(data_dir=str(Path(a.data_dir).resolve()), run_dir=str(Path(a.run_dir).resolve()), epochs=20,
                  batch_size=a.batch_size, limit_train=a.limit_train, limit_test=a.limit_test,
                  find_lr_steps=a.find_lr_steps, device="cpu")
    render(budget, a.machine)


if __name__ == "__main__":
    main()
