"""Sweep train.py's options x seeds on Optuna: every trial is a normal run directory made by the same fit
as train.py, and settings are chosen on validation accuracy (test accuracy is reported, never chooses).

  python sweep.py --name optim --grid optimizer=sgd,nesterov,adamw --grid lr=0.05,0.1,0.2 --seeds 3 -- --epochs 20
  python sweep.py --name optim ... --workers 4      # 4 trials at once: one per GPU, or the CPU cores split
  python sweep.py --name optim ... --storage postgresql://USER:PASS@HOST/DB   # the same command on each machine
  tensorboard --logdir runs/sweeps/optim            # every trial's curves; its settings and metrics in HParams

Run the same command again after a crash or Ctrl-C: finished trials are kept, the others resume from
their last.pt. Results: runs/sweeps/NAME/summary.csv, summary.json, sweep.png.
"""
import sys

import sweeps
from common import cli


def main(argv=None):
    ours, theirs = sweeps.split_argv(sys.argv[1:] if argv is None else argv)
    options = sweeps.Options(**cli.parse(sweeps.Options, ours, sweeps.described(__doc__)))
    sweeps.run(options, theirs)  # Optuna, torch and DALI load here, the options checked


if __name__ == "__main__":
    cli.run(main)
