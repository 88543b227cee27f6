"""The pictures of one checkpoint, each from a few test images: the gallery of mistakes, Grad-CAM for
the predicted vs the true class, Grad-CAM by depth, the CAM methods side by side, adversarial examples."""
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .attacks import attack
from .cams import cams
from .faithfulness import faithfulness
from .figures import grid, overlay, wrap
from .layers import block, fine_enough, map_size, stage_names
from .pixels import hwc, normalise, to_pixels


@dataclass
class Study:
    """The checkpoint under study, and where its pictures go."""
    model: nn.Module
    layer: nn.Module
    layer_name: str
    classes: list
    mean: tuple
    std: tuple
    image_size: int
    out: Path

    def pixels(self, images):
        return to_pixels(images, self.mean, self.std)

    def label(self, true, pred, conf) -> str:
        return f"{self.classes[true]} → {self.classes[pred]} ({conf:.0%})"


def gallery(s: Study, images, index, labels, preds, conf, title: str):
    """misclassified.png: the images in real colours, each titled true → predicted (confidence)."""
    cells = [[(hwc(p), f"{s.label(labels[i], preds[i], conf[i])}\ntest #{i}")]
             for p, i in zip(s.pixels(images), index)]
    grid(wrap(cells, 5), s.out / "misclassified.png", title, cam_bar=False)


def class_pairs(s: Study, images, labels, preds, conf):
    """gradcam.png: each image's Grad-CAM for its predicted and for its true class."""
    on_pred, on_true = cams(s.model, s.layer, images, preds), cams(s.model, s.layer, images, labels)
    cells = [[(hwc(p), s.label(y, z, c)), overlay(p, a, f"for {s.classes[z]} (predicted)"),
              overlay(p, b, f"for {s.classes[y]} (true)")]
             for p, y, z, c, a, b in zip(s.pixels(images), labels, preds, conf, on_pred, on_true)]
    grid(wrap(cells, 2), s.out / "gradcam.png", f"Grad-CAM at {s.layer_name}: predicted vs true class")


def by_depth(s: Study, image, label, pred, conf):
    """layers.png: one image's Grad-CAM at the end of every stage whose map is fine enough."""
    pix = s.pixels(image[None])[0]
    row = [(hwc(pix), s.label(label, pred, conf))]
    for name in [n for n in stage_names(s.model) if fine_enough(s.model, n, s.image_size)]:
        h, w = map_size(s.model, block(s.model, name), s.image_size)
        row.append(overlay(pix, cams(s.model, block(s.model, name), image[None], [pred])[0],
                           f"end of {name} ({h}x{w})"))
    grid([row], s.out / "layers.png", f"Grad-CAM by depth, for the predicted class {s.classes[pred]}")


def compare_methods(s: Study, images, classes, names: list) -> dict:
    """methods.png, and each method's faithfulness and seconds on these images for `classes`."""
    pix, columns, scores = s.pixels(images), [], {}
    for name in names:
        t0 = time.perf_counter()
        maps = cams(s.model, s.layer, images, classes, name)
        scores[name] = {**faithfulness(s.model, images, maps, classes), "seconds": time.perf_counter() - t0}
        head = f"{name}\nLeRF−MoRF {scores[name]['score']:+.3f}"  # the column's title, on the top row
        columns.append([overlay(p, m, head if k == 0 else "") for k, (p, m) in enumerate(zip(pix, maps))])
    rows = [[(hwc(p), f"predicted {s.classes[c]}")] + [col[k] for col in columns]
            for k, (p, c) in enumerate(zip(pix, classes))]
    grid(rows, s.out / "methods.png", f"CAM methods at {s.layer_name}, for the predicted class")
    return scores


def attacked(s: Study, images, labels: torch.Tensor, method: str, eps: float) -> list:
    """adversarial.png: original vs attacked (eps in /255 units), each with its prediction and Grad-CAM."""
    pix = s.pixels(images)
    adv = attack(s.model, pix, labels, eps / 255, s.mean, s.std, method)
    with torch.no_grad():
        before, after = (s.model(normalise(x, s.mean, s.std)).softmax(1) for x in (pix, adv))
    fooled_as = after.argmax(1)
    cam_true = cams(s.model, s.layer, images, labels)
    cam_adv = cams(s.model, s.layer, normalise(adv, s.mean, s.std), fooled_as)
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
    grid(wrap(cells, 2), s.out / "adversarial.png",
         f"{method.upper()} at ε = {eps:g}/255: original vs attacked, Grad-CAM at {s.layer_name}")
    return rows
