"""Explain a trained checkpoint: curves, mistakes, class activation maps and the evidence for them
(faithfulness with intervals, a random-map baseline, a sanity check), confusion, attacks; docs/explain.md.

  python viz.py --checkpoint runs/resnet18/last.pt              # everything, into runs/resnet18/viz/
  python viz.py --checkpoint RUN/best.pt --layer layer2 --method gradcam eigencam
  python viz.py --checkpoint RUN/last.pt --faithfulness-images 500 --sanity-images 100   # which map to believe
  python viz.py --checkpoint RUN/last.pt --adversarial --attack pgd --eps 8

It never trains and writes nothing outside --out. The test set goes through the DALI eval pipeline with
the checkpoint's normalisation, as in training; the model is rebuilt uncompiled, in float32. The same
pictures in a notebook: explain.Explanation (this script saves what its methods return).
"""
import sys
import time

import explain
from common import cli


def main(argv=None):
    started, options = time.perf_counter(), explain.parse(sys.argv[1:] if argv is None else argv, __doc__)
    ex = explain.Explanation.load(options.checkpoint, options.device, options.data_dir, options.limit_test,
                                  options.layer)  # torch, DALI and grad-cam load here, the options checked
    print(ex.accuracy_line(), flush=True)
    if ex.chance()["note"]:
        print(f"note: {ex.chance()['note']}", flush=True)
    print(ex.report(options, started=started))


if __name__ == "__main__":
    cli.run(main)
