"""Training throughput in images/s, so that "fast" is a number: three loaders doing the same
augmentation (padded crop, flip, cutout 16, normalise) against each other — the DALI pipeline that
train.py uses, a torch-ops loader (the uint8 set resident on the device, whole-batch torch ops: the
approach of the fastest CIFAR-10 scripts) and a torchvision DataLoader — alone, and feeding the
training step, against the training step alone (the ceiling). Then the ratios, each loader's
data-loading tax (1 - end-to-end / model only), the FLOP/s and bytes/s reached (against the GPU's
peak when it is known), with --fast-paths (on by default on a GPU) the training step eager against
torch.compile and CUDA graphs, bf16 against fp16, and which defaults the figures would choose; with
--scaling, images/s against batch size and threads.
A table on stdout, a line per stage run on stderr as it goes, every figure in --json (rewritten after
each group of stages, so a run cut short keeps what it measured), the bars and curves in --png.
Results: BENCHMARKS.md.

  python bench.py --data-dir data              # the CIFAR-10 store (run train.py once to fetch it)
  python bench.py --synthetic 50000            # no dataset at hand: random uint8 images, labelled so
  python bench.py --synthetic 50000 --scaling  # + how each loader's cost grows

Each pipeline stage is --warmup untimed runs then --repeats timed ones, a run being whole passes over
the images lasting at least --run-seconds; the model stages share --warmup untimed steps, then take
turns for --model-repeats rounds of --model-steps steps. Stages take turns round by round, so a busy
spell on the machine hits them alike; the figures are the median, min and max of the runs.
Other processes distort the figures (a thread that finds no free core stalls its peers), so the run
uses as many threads as the cores other processes leave free (--threads), records per stage the
cores' worth of CPU other processes took during its runs and the load average around them, and marks
a stage unreliable when others took more than a quarter of a core or its runs spread more than 2x; a
ratio, tax or choice involving it then gives no verdict, and a tax below -3 % beyond the runs'
spread is called impossible. A verdict needs the runs' ranges apart; inside them it is a tie.
The defaults follow the device: on a GPU the whole set, train.py's batch, an epoch of steps per run,
--repeats rounds and the fast paths; on a CPU 10,240 images, 1 step per run, 2 rounds and the
largest batch up to train.py's whose model stages take about a minute at the speed a probe step
measures, so that a default run ends in a few minutes on any CPU (the JSON records the batch and
how it was chosen; docs/benchmark.md gives measured wall times). --scaling and --fast-paths add
minutes on a CPU (each compiled variant compiles ResNet18 there).
A stage that takes longer than --stage-timeout fails, named; the run then exits 1 with the figures
measured so far in --json. Bad flags or missing data: one line, exit 2.
"""
import sys

import benchmark
from common import cli


def main(argv=None):
    options = benchmark.parse(sys.argv[1:] if argv is None else argv, __doc__)
    benchmark.bench(options)  # torch and DALI load here, the options checked


if __name__ == "__main__":
    cli.run(main)
