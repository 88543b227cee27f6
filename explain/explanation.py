"""One checkpoint explained, the same way for a notebook and for viz.py: `Explanation.load` reads the
checkpoint, rebuilds its model (the EMA weights when the run kept them), opens its data and runs the
test pass once; every method then returns a matplotlib Figure (a notebook shows it inline, viz.py
saves it) and, where it measures something, the numbers too.

    from explain import Explanation
    ex = Explanation.load("runs/resnet18/last.pt")
    print(ex.accuracy_line())     # test accuracy 47.13% on 10000 images (EMA weights, flip TTA)
    ex.curves()
    ex.misclassified(n=10)
    ex.gradcam(n=10, layer="layer3")

A user mistake (no checkpoint, no data, a bad layer) raises common.cli.UserError with the line the
command line prints."""
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import pipeline
from common import chance
from common import device as devices
from common.cli import UsageError, UserError
from nets import checkpoint as checkpoints

from . import cams, evaluation, figures, report as reports
from .comparison import Comparison, Spec, compare
from .evaluation import Predictions
from .layers import map_size
from .options import (DEFAULT_METHODS, METHOD_IMAGES, Options, check_attack, check_count, check_methods,
                      comparison_sizes)
from .pictures import Study, attacked, by_depth, class_pairs, compare_methods, gallery


@dataclass(frozen=True)
class Explanation:
    """A checkpoint, its model and data, and its test pass; the pictures are its methods."""
    checkpoint: str
    state: dict             # the checkpoint as nets.checkpoint.load returns it
    data: pipeline.Dataset
    data_dir: str
    device: torch.device
    study: Study
    layer: str              # where the CAMs look unless a call names another layer
    test: Predictions       # the test pass

    @classmethod
    def load(cls, checkpoint, device="auto", data_dir="", limit_test=None, layer="layer3") -> "Explanation":
        """limit_test: evaluate that many test images, every class kept in its share (the same ones as
        training's --limit-test); 0: all; None: all on a GPU, evaluation.CPU_TEST_IMAGES on the CPU.
        data_dir: default, the one the run trained on."""
        if device not in devices.CHOICES:
            raise UsageError(f"--device {device!r}: choose from {', '.join(devices.CHOICES)}")
        where = devices.choose(device)
        limit_test = evaluation.test_limit(limit_test, where)
        state = checkpoints.load(checkpoint)
        model = evaluation.load_model(state, checkpoint, where)
        data_dir = str(data_dir or state["config"].get("data_dir", "data"))
        data = evaluation.open_data(state, data_dir)
        study = Study(model, list(state["classes"]), tuple(state["mean"]), tuple(state["std"]), data.image_size)
        study.layer(layer)  # a bad layer fails before the long work
        index = evaluation.test_index(data, limit_test)
        loader = evaluation.test_loader(data, state, index, where)
        test = evaluation.predict(model, loader, index, state["config"].get("tta", False))
        classes, high = len(study.classes), chance.guessing_range(len(study.classes), len(test))[1]
        if chance.at_chance(test.accuracy, classes, len(test)):
            study = replace(study, caveat=f"a model at chance ({test.accuracy:.1%} on {len(test)} images; "
                                          f"guessing reaches {high:.1%}): these maps mean nothing")
        return cls(str(checkpoint), state, data, data_dir, where, study, layer, test)

    @property
    def weights(self) -> str:
        """"ema" (the moving average of the weights) or "model" (the raw weights)."""
        return evaluation.weights_of(self.state)

    @property
    def tta(self) -> bool:
        return bool(self.state["config"].get("tta", False))

    def accuracy_line(self) -> str:
        """The test accuracy, naming the weights and the test-time augmentation that gave it."""
        weights = "EMA weights" if self.weights == "ema" else "raw weights"
        return (f"test accuracy {self.test.accuracy:.2%} on {len(self.test)} images "
                f"({weights}, {'flip TTA' if self.tta else 'no TTA'})")

    def chance(self) -> dict:
        """Whether the accuracy beats guessing, by common.chance (the one rule, train.py's too):
        at_chance, the range guessing reaches on this many images, and the note to print ("" if none)."""
        classes, n = len(self.study.classes), len(self.test)
        low, high = chance.guessing_range(classes, n)
        return {"at_chance": chance.at_chance(self.test.accuracy, classes, n), "guessing_low": low,
                "guessing_high": high, "note": chance.chance_note(self.test.accuracy, classes, n)}

    def __repr__(self):
        return f"Explanation of {self.checkpoint}: {self.accuracy_line()}"

    def images(self, p: Predictions) -> torch.Tensor:
        """The normalised test images behind some predictions, read again through the eval pipeline."""
        return evaluation.images(self.data, self.state, p.index, self.device)

    def mistakes(self, n: int) -> Predictions:
        """The first n misclassified test images; with no mistake at all, the first n images."""
        check_count(n)
        wrong = self.test.wrong(n)
        return wrong if len(wrong) else self.test.take(np.arange(min(n, len(self.test))))

    def curves(self) -> Figure:
        """Loss and accuracy per epoch (train, test, validation, EMA), the LR of every step."""
        return figures.plot_curves(self.state["history"], self.state["lr_steps"])

    def misclassified(self, n: int = 10) -> Figure:
        """The first n mistakes in test order, real colours, true → predicted (confidence)."""
        shown, total = self.mistakes(n), len(self.test)
        title = (f"first {len(shown)} misclassified of {total} test images (true → predicted)"
                 if self.test.accuracy < 1 else
                 f"no mistakes in {total} test images: the first {len(shown)} instead")
        return gallery(self.study, self.images(shown), shown, title)

    def gradcam(self, n: int = 10, layer: str = "") -> Figure:
        """Grad-CAM of the first n mistakes, for the predicted and for the true class side by side."""
        shown = self.mistakes(n)
        return class_pairs(self.study, layer or self.layer, self.images(shown), shown)

    def depth(self) -> Figure:
        """The first mistake's Grad-CAM at the end of each stage fine enough for a CAM."""
        first = self.mistakes(1)
        return by_depth(self.study, self.images(first)[0], first)

    def confusion_matrix(self) -> np.ndarray:
        return evaluation.confusion_matrix(self.test.labels, self.test.preds, len(self.study.classes))

    def confusion(self) -> Figure:
        return figures.plot_confusion(self.confusion_matrix(), self.study.classes)

    def per_class(self) -> list:
        """Per class: images, correct, accuracy, the class it is most often taken for."""
        return reports.per_class(self.confusion_matrix(), self.study.classes)

    def methods(self, names=DEFAULT_METHODS, n: int = METHOD_IMAGES, layer: str = "", table=None) -> Figure:
        """CAM methods side by side on the first n mistakes, for the predicted class; with the table of
        faithfulness() each column is headed by its score there."""
        names, shown = check_methods(names), self.mistakes(n)
        return compare_methods(self.study, layer or self.layer, self.images(shown), shown.preds, names, table)

    def faithfulness(self, names=DEFAULT_METHODS, images=None, sanity_images=None, layer: str = "",
                     seed: int = 0) -> Comparison:
        """The evidence for which map to believe (explain.comparison): ROAD in both orders for each
        method and a random-map baseline on `images` test images (every class in its share, the same
        for every method), intervals, ranks only where intervals separate, and the model-randomisation
        sanity check on `sanity_images` of them. None: FAITHFULNESS_IMAGES / SANITY_IMAGES for the
        device. The Comparison prints as tables (a notebook shows them) and holds every number."""
        names = check_methods(names)
        images, sanity_images = comparison_sizes(images, sanity_images, self.device.type)
        layer = layer or self.layer
        chosen = self.test.take(pipeline.subset(self.test.labels, images, seed))
        target = self.study.layer(layer)
        spec = Spec(layer, map_size(self.study.model, target, self.study.image_size), sanity_images, seed,
                    self.study.caveat)
        makers = {name: cams.maker(name, layer) for name in names}
        return compare(self.study.model, self.images(chosen), chosen.preds, makers, spec)

    def report(self, options: Options, out=None, started: float | None = None) -> reports.Written:
        """Every picture as options (viz.py's, explain.Options) asks, summary.json and report.md into out
        (default: viz/ beside the checkpoint); the Written prints as viz.py prints it."""
        out = Path(out or options.out or Path(self.checkpoint).parent / "viz")
        return reports.write(self, options, out, time.perf_counter() if started is None else started)

    def adversarial(self, n: int = 10, attack: str = "fgsm", eps: float = 8, layer: str = "") -> tuple:
        """(Figure, rows): the first n correctly classified images attacked (eps in pixel units /255)."""
        check_count(n)
        check_attack(attack, eps)
        right = self.test.right(n)
        if not len(right):
            raise UserError("no correctly classified test image to attack")
        labels = torch.as_tensor(right.labels, device=self.device)
        return attacked(self.study, layer or self.layer, self.images(right), labels, attack, eps)
