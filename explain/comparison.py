"""Which CAM method to believe, with its evidence: ROAD in both orders (explain.faithfulness) on N
images, the same images and the same random draws for every method and for a random-map baseline;
each number a mean over the images with its 95 % interval; methods ranked only where the paired
difference's interval excludes 0; and the sanity check (explain.sanity) on some of the same images.
compare() measures; the Comparison it returns is the table (markdown, a dict for JSON, notes)."""
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import pipeline
from common import progress
from common.tables import markdown

from . import sanity
from .faithfulness import REMOVED, random_maps, road
from .intervals import Interval, ranks

RANDOM = "random map"
MEASURES = {
    "MoRF": "change of the predicted class's softmax probability when the map's most relevant pixels are "
            f"removed ({', '.join(f'{100 * f:.0f}' for f in REMOVED)} % of them, filled by noisy linear "
            "imputation), averaged over those fractions; a faithful map: far below 0",
    "LeRF": "the same with the least relevant pixels removed first; a faithful map: near 0",
    "LeRF−MoRF": "per image, LeRF minus MoRF; > 0: the pixels the map marks matter more to the prediction "
                 "than the others (higher is more faithful); ≤ 0: no more than the rest",
    "vs random map": "the method's LeRF−MoRF minus the random map's, image by image: the random map is "
                     "uniform noise at the layer's resolution, smoothed like a CAM, i.e. what a map that "
                     "points nowhere scores",
    "rank": "1 + the number of methods whose paired LeRF−MoRF difference with this one has an interval "
            "above 0: methods no interval separates share a rank (tied)",
    "sanity ρ": "Spearman rank correlation between a map of the trained model and of a copy whose blocks "
                "are re-drawn at random, from the output back to the named one (Adebayo et al. 2018); "
                f"near 1: the map does not depend on those weights; flagged: a mean above {sanity.THRESHOLD} "
                "with every block random",
    "±": "half the width of the 95 % Student-t interval over the images",
}
CAVEAT = ("ROAD and the sanity check answer different questions. ROAD asks whether the marked pixels "
          "matter to the prediction, and rewards smooth, blob-like maps: removing one connected region "
          "hurts more than removing scattered pixels that imputation restores from their neighbours "
          "(Song et al. 2023), so a blurrier map can win. The sanity check asks whether a map depends on "
          "the weights at all, not whether it is on the object. Neither measures localisation.")


@dataclass(frozen=True)
class Spec:
    """How to compare: the CAM layer and its map size (the random baseline's grain), how many of the
    images the sanity check uses (0: none), the seed of every draw, a caveat for the notes."""
    layer: str
    grain: tuple
    sanity_images: int
    seed: int = 0
    caveat: str = ""


@dataclass(frozen=True)
class Row:
    """One method's (or the random map's) numbers: intervals over the images."""
    method: str
    morf: Interval
    lerf: Interval
    score: Interval               # LeRF − MoRF
    vs_random: Interval | None    # paired with the random map (None for the random map itself)
    rank: int
    tied: bool                    # another row shares the rank
    seconds: dict                 # maps, road, sanity
    sanity: tuple = ()            # an Interval per depth of the cascade

    @property
    def flagged(self) -> bool:
        return bool(self.sanity) and self.sanity[-1].mean > sanity.THRESHOLD


@dataclass(frozen=True)
class Comparison:
    """The table: rows best rank first, every pair's paired difference, the sanity depths."""
    layer: str
    images: int
    sanity_images: int
    seed: int
    depths: tuple                 # the cascade's blocks, from the output back
    rows: tuple
    pairs: tuple                  # (a, b, Interval of a's LeRF−MoRF minus b's)
    caveat: str = ""

    def row(self, method: str) -> Row:
        return next(r for r in self.rows if r.method == method)

    def notes(self) -> list:
        """Where the numbers disagree or say nothing, in words."""
        notes = [self.caveat] if self.caveat else []
        top = min(r.rank for r in self.rows)
        for r in self.rows:
            if r.vs_random is not None and r.vs_random.high < 0:
                notes.append(f"{r.method} scores below the random map on these {self.images} images (difference "
                             f"{r.vs_random.text()}): the pixels it marks matter less than ones picked at random")
            elif r.vs_random is not None and not r.vs_random.low > 0:
                notes.append(f"{r.method}: ROAD does not tell its maps from the random map's on these "
                             f"{self.images} images (difference {r.vs_random.text()})")
            if r.flagged:
                ranked = " although ROAD ranks it first" if r.rank == top else ""
                notes.append(f"{r.method} fails the sanity check{ranked}: with every block random its maps "
                             f"keep ρ = {r.sanity[-1].text()}: they follow the image, not the weights")
            elif self.unmoved(r):
                blocks = self.depths[:len(self.unmoved(r))]
                why = "; fc is the classifier: not from the class explained either" if blocks[0] == "fc" else ""
                notes.append(f"{r.method}'s maps stay similar (ρ > {sanity.THRESHOLD}) with {', '.join(blocks)} "
                             f"random (ρ = {', '.join(s.text() for s in self.unmoved(r))}): much of what they "
                             f"show does not come from those weights{why}")
        return notes

    @staticmethod
    def unmoved(r: Row) -> list:
        """The sanity intervals, from the output back, for as long as the maps stay above the threshold."""
        kept = []
        for s in r.sanity:
            if s.mean <= sanity.THRESHOLD:
                break
            kept.append(s)
        return kept

    def tables(self) -> dict:
        """Markdown tables by title: the faithfulness table, the paired differences, the sanity check."""
        title = (f"faithfulness at {self.layer} (ROAD on {self.images} test images, every class in its share, "
                 "for the predicted class; mean ± 95 % interval; LeRF−MoRF > 0: faithful)")
        main = [[r.method, r.score.text(), r.morf.text(), r.lerf.text(),
                 r.vs_random.text() if r.vs_random else "–", f"{r.rank}{' (tied)' if r.tied else ''}",
                 r.sanity[-1].text() if r.sanity else "–", f"{sum(r.seconds.values()):.1f}"] for r in self.rows]
        t = {title: markdown(["method", "LeRF−MoRF", "MoRF Δconf", "LeRF Δconf", "vs random map", "rank",
                              "sanity ρ, all random", "seconds"], main)}
        pairs = [[f"{a} − {b}", d.text(), a if d.low > 0 else b if d.high < 0 else "tied"]
                 for a, b, d in self.pairs]
        t["paired differences of LeRF−MoRF (same images)"] = markdown(["pair", "difference", "better"], pairs)
        if self.depths:
            checked = [r for r in self.rows if r.sanity]
            cells = [[r.method, *(s.text() for s in r.sanity), "FLAGGED" if r.flagged else "no"] for r in checked]
            t[f"sanity check on {self.sanity_images} of the images: ρ(trained map, map with the weights random "
              f"from the output down to ...)"] = markdown(["method", *self.depths, "flagged"], cells)
        return t

    def markdown(self) -> str:
        return "\n\n".join(f"{title}:\n\n{table}" for title, table in self.tables().items()) + \
            "\n\n" + "\n".join(f"- {n}" for n in self.notes())

    def _repr_markdown_(self):  # a notebook shows the tables
        return self.markdown()

    def as_dict(self) -> dict:
        return {"layer": self.layer, "images": self.images, "sanity_images": self.sanity_images,
                "seed": self.seed, "removed": list(REMOVED), "depths": list(self.depths),
                "sanity_threshold": sanity.THRESHOLD, "measures": MEASURES, "caveat": CAVEAT,
                "methods": {r.method: {"morf": r.morf.as_dict(), "lerf": r.lerf.as_dict(),
                                       "score": r.score.as_dict(),
                                       "vs_random": r.vs_random.as_dict() if r.vs_random else None,
                                       "rank": r.rank, "tied": r.tied, "seconds": r.seconds,
                                       "sanity": {d: s.as_dict() for d, s in zip(self.depths, r.sanity)},
                                       "flagged": r.flagged} for r in self.rows},
                "pairs": [{"a": a, "b": b, **d.as_dict()} for a, b, d in self.pairs], "notes": self.notes()}


def compare(model: nn.Module, images: torch.Tensor, classes, makers: dict, spec: Spec) -> Comparison:
    """makers: method name -> (model, images, classes) -> (N, H, W) maps in [0, 1]. Every method and
    the random map are scored by ROAD on all the images with the same seed; the sanity check re-runs
    the makers on spec.sanity_images of them (every class in its share) under sanity.cascade."""
    classes = np.asarray(classes)
    maps, scores, seconds = {}, {}, {}
    for name, make in progress.bar(list(makers.items()), desc="faithfulness", unit="method"):
        t0 = time.perf_counter()
        maps[name] = make(model, images, classes)
        t1 = time.perf_counter()
        scores[name] = road(model, images, maps[name], classes, spec.seed)
        seconds[name] = {"maps": t1 - t0, "road": time.perf_counter() - t1, "sanity": 0.0}
    t0 = time.perf_counter()
    noise = random_maps(len(images), spec.grain, tuple(images.shape[-2:]), torch.Generator().manual_seed(spec.seed))
    scores[RANDOM] = road(model, images, noise, classes, spec.seed)
    seconds[RANDOM] = {"maps": 0.0, "road": time.perf_counter() - t0, "sanity": 0.0}
    depths, correlations = check_sanity(model, images, classes, maps, makers, spec, seconds)
    return table(scores, seconds, correlations, depths, spec, len(images))


def check_sanity(model, images, classes, maps: dict, makers: dict, spec: Spec, seconds: dict) -> tuple:
    """(depths, {method: per depth, the per-image correlations}); adds each method's seconds."""
    if not spec.sanity_images:
        return (), {}
    rows = pipeline.subset(classes, spec.sanity_images, spec.seed)
    correlations = {name: [] for name in makers}
    depths = []
    steps = sanity.cascade(model, spec.seed)  # one copy randomised further each step: consumed in turn
    for depth, randomised in progress.bar(steps, total=len(sanity.blocks(model)), desc="sanity", unit="depth"):
        depths.append(depth)
        for name, make in makers.items():
            t0 = time.perf_counter()
            again = make(randomised, images[rows], classes[rows])
            correlations[name].append(sanity.rank_correlations(maps[name][rows], again))
            seconds[name]["sanity"] += time.perf_counter() - t0
    return tuple(depths), correlations


def table(scores: dict, seconds: dict, correlations: dict, depths: tuple, spec: Spec, n: int) -> Comparison:
    """The rows, best rank first (then the higher mean), and every pair's paired difference."""
    score = {name: s["lerf"] - s["morf"] for name, s in scores.items()}
    rank = ranks(score)
    rows = [Row(name, Interval.of(s["morf"]), Interval.of(s["lerf"]), Interval.of(score[name]),
                None if name == RANDOM else Interval.of(score[name] - score[RANDOM]), rank[name],
                list(rank.values()).count(rank[name]) > 1, seconds[name],
                tuple(Interval.of(c) for c in correlations.get(name, ())))
            for name, s in scores.items()]
    rows.sort(key=lambda r: (r.rank, -r.score.mean))
    names = [r.method for r in rows]
    pairs = tuple((a, b, Interval.of(score[a] - score[b])) for i, a in enumerate(names) for b in names[i + 1:])
    return Comparison(spec.layer, n, spec.sanity_images if depths else 0, spec.seed, depths, tuple(rows), pairs,
                      spec.caveat)
