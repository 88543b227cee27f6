"""The pictures of one checkpoint, each from a few test images: the gallery of mistakes, Grad-CAM for
the predicted vs the true class, Grad-CAM by depth, the CAM methods side by side, adversarial examples.
Each returns its Figure (and the numbers it measured); nothing is written here."""
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import nn

from common import progress

from .attacks import attack
from .cams import cams
from .evaluation import Predictions
from .figures import grid, overlay, wrap
from .layers import block, find_layer, fine_enough, map_size, stage_names
from .pixels import hwc, normalise, to_pixels


@dataclass(frozen=True)
class Study:
    """The model under study and what it takes to show its inputs as pictures."""
    model: nn.Module
    classes: list
    mean: tuple
    std: tuple
    image_size: int
    caveat: str = ""        # said on every picture of maps (a model at chance: they mean nothing)

    def titled(self, title: str) -> str:
        return f"{title}\n{self.caveat}" if self.caveat else title

    def pixels(self, images):
        return to_pixels(images, self.mean, self.std)

    def label(self, true, pred, conf) -> str:
        return f"{self.classes[true]} → {self.classes[pred]} ({conf:.0%})"

    def layer(self, name: str) -> nn.Module:
        """The block a layer name means; UsageError, with the CLI's --layer message, if it cannot be."""
        return find_layer(self.model, name, self.image_size)


def gallery(s: Study, images, p: Predictions, title: str) -> Figure:
    """The images in real colours, each titled true → predicted (confidence) and its test-set index."""
    cells = [[(hwc(pix), f"{s.label(y, z, c)}\ntest #{i}")]
             for pix, i, y, z, c in zip(s.pixels(images), p.index, p.labels, p.preds, p.conf)]
    return grid(wrap(cells, 5), title, cam_bar=False)


def class_pairs(s: Study, layer: str, images, p: Predictions) -> Figure:
    """Each image's Grad-CAM at `layer` for its predicted and for its true class."""
    target = s.layer(layer)
    on_pred, on_true = cams(s.model, target, images, p.preds), cams(s.model, target, images, p.labels)
    cells = [[(hwc(pix), f"{s.label(y, z, c)}\ntest #{i}"), overlay(pix, a, f"for {s.classes[z]} (predicted)"),
              overlay(pix, b, f"for {s.classes[y]} (true)")]
             for pix, i, y, z, c, a, b in zip(s.pixels(images), p.index, p.labels, p.preds, p.conf,
                                              on_pred, on_true)]
    return grid(wrap(cells, 2), s.titled(f"Grad-CAM at {layer}: predicted vs true class"))


def by_depth(s: Study, image, p: Predictions) -> Figure:
    """One image's Grad-CAM, for its predicted class, at the end of every stage whose map is fine enough."""
    pix, pred = s.pixels(image[None])[0], int(p.preds[0])
    row = [(hwc(pix), f"{s.label(p.labels[0], pred, p.conf[0])}\ntest #{p.index[0]}")]
    for name in [n for n in stage_names(s.model) if fine_enough(s.model, n, s.image_size)]:
        h, w = map_size(s.model, block(s.model, name), s.image_size)
        row.append(overlay(pix, cams(s.model, block(s.model, name), image[None], [pred])[0],
                           f"end of {name} ({h}x{w})"))
    return grid([row], s.titled(f"Grad-CAM by depth, for the predicted class {s.classes[pred]}"))


def compare_methods(s: Study, layer: str, images, classes, names: list, table=None) -> Figure:
    """The CAM methods side by side on these images for `classes`; with a comparison table
    (explain.comparison), each column headed by its LeRF−MoRF over the table's images."""
    pix, target, columns = s.pixels(images), s.layer(layer), []
    scored = {r.method: r.score for r in table.rows} if table else {}
    for name in progress.bar(names, desc="CAM methods", unit="method"):
        maps = cams(s.model, target, images, classes, name)
        head = f"{name}\nLeRF−MoRF {scored[name].text()}" if name in scored else name  # on the top row only
        columns.append([overlay(p, m, head if k == 0 else "") for k, (p, m) in enumerate(zip(pix, maps))])
    rows = [[(hwc(p), f"predicted {s.classes[c]}")] + [col[k] for col in columns]
            for k, (p, c) in enumerate(zip(pix, classes))]
    title = f"CAM methods at {layer}, for the predicted class"
    if table:
        title += (f"; LeRF−MoRF: ROAD on {table.images} test images, mean ± 95 % interval;\n> 0: the marked "
                  "pixels matter more to the prediction than the rest (faithful), ≤ 0: they do not")
    return grid(rows, s.titled(title))


def attacked(s: Study, layer: str, images, labels: torch.Tensor, method: str, eps: float) -> tuple:
    """(Figure, rows): original vs attacked (eps in /255 units), each with its prediction and Grad-CAM."""
    pix, target = s.pixels(images), s.layer(layer)
    adv = attack(s.model, pix, labels, eps / 255, s.mean, s.std, method)
    with torch.no_grad():
        before, after = (s.model(normalise(x, s.mean, s.std)).softmax(1) for x in (pix, adv))
    fooled_as = after.argmax(1)
    cam_true = cams(s.model, target, images, labels)
    cam_adv = cams(s.model, target, normalise(adv, s.mean, s.std), fooled_as)
    gain = 0.5 / (eps / 255)  # the perturbation, scaled to fill mid-grey +- 0.5
    cells, rows = [], []
    for k, (y, z) in enumerate(zip(labels.tolist(), fooled_as.tolist())):
        rows.append({"true": s.classes[y], "before": float(before[k, y]), "predicted": s.classes[z],
                     "confidence": float(after[k, z]), "true_after": float(after[k, y]), "fooled": z != y})
        cells.append([(hwc(pix[k]), f"{s.classes[y]} ({before[k, y]:.0%})"),
                      overlay(pix[k], cam_true[k], f"CAM {s.classes[y]}"),
                      (hwc(adv[k]), f"{'fooled' if z != y else 'held'}: {s.classes[z]} ({after[k, z]:.0%})"),
                      overlay(adv[k], cam_adv[k], f"CAM {s.classes[z]}"),
                      (hwc((0.5 + gain * (adv[k] - pix[k])).clamp(0, 1)), f"perturbation x{gain:.0f}")])
    title = f"{method.upper()} at ε = {eps:g}/255: original vs attacked, Grad-CAM at {layer}"
    return grid(wrap(cells, 2), s.titled(title)), rows
