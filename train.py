"""Train ResNet18/34 on CIFAR-10 (or your own image folders) with DALI pipelines.

  python train.py                                  # ResNet18, 20 epochs, OneCycle, bf16, channels-last
  python train.py --find-lr                        # LR range test: plot, suggested max LR, exit
  python train.py --lr auto                        # range test, then train with its suggestion
  python train.py --resume runs/resnet18/last.pt   # continue exactly where a run stopped
  torchrun --nproc_per_node=8 train.py             # several GPUs: DDP, one DALI shard per rank
"""
import sys

import training
from common import cli


def main(argv=None):
    cfg = training.Config(**cli.parse(training.Config, sys.argv[1:] if argv is None else argv, __doc__))
    (training.find_lr if cfg.find_lr else training.fit)(cfg)  # torch and DALI load here, the options checked


if __name__ == "__main__":
    cli.run(main)
