"""Train ResNet18/34 on CIFAR-10 (or your own image folders) with DALI pipelines.

  python train.py                                  # ResNet18, 20 epochs, OneCycle, bf16, channels-last
  python train.py --find-lr                        # LR range test: plot, suggested max LR, exit
  python train.py --lr auto                        # range test, then train with its suggestion
  python train.py --resume runs/resnet18/last.pt   # continue exactly where a run stopped
  torchrun --nproc_per_node=8 train.py             # several GPUs: DDP, one DALI shard per rank
"""
import sys

from common import cli
from nets import checkpoint
from training import config
from training.loop import fit


def main(argv=None):
    given = config.parse(sys.argv[1:] if argv is None else argv, __doc__)
    resumed = checkpoint.load(given["resume"]) if "resume" in given else None
    fit(config.build(given, resumed), resumed)


if __name__ == "__main__":
    cli.run(main)
