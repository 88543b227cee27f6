"""The explain package's statistics, on numbers and the tiny synthetic set: when an accuracy is at
chance (common.chance, shared with training), ROAD's imputation and removal, and the comparison of
methods (explain.comparison) with planted methods whose answer is known: a map of the only pixels a
model sees, its opposite, random maps, two identical methods, and one that ignores the weights."""
from collections import OrderedDict
from functools import partial

import numpy as np
import pytest
import torch
from scipy.stats import binom
from scipy.stats import t as student_t

import pipeline
from common import chance
from explain import cams, comparison, faithfulness, intervals, sanity


@pytest.mark.parametrize("classes, images", [(10, 10000), (10, 120), (10, 7), (2, 50), (100, 1000)])
def test_guessing_range_is_the_binomial_central_95_percent(classes, images):
    low, high = chance.guessing_range(classes, images)
    assert (low, high) == tuple(binom.ppf([0.025, 0.975], images, 1 / classes) / images)


def test_at_chance_up_to_the_top_of_the_guessing_range_only():
    low, high = chance.guessing_range(10, 1000)
    assert (low, high) == (0.082, 0.119)
    assert chance.at_chance(0.1, 10, 1000) and chance.at_chance(0.0, 10, 1000) and chance.at_chance(high, 10, 1000)
    assert not chance.at_chance(0.12, 10, 1000)
    assert chance.chance_note(0.12, 10, 1000) == ""
    assert chance.chance_note(0.1, 10, 1000) == (
        "at chance: 10.00% on 1000 images is within what guessing 1 of 10 classes gives 95 % of the time "
        "(8.2%-11.9%); this model learned nothing measurable and its class activation maps mean nothing")
    assert not chance.at_chance(0.2, 10, 10000) and chance.at_chance(0.2, 10, 24)  # the same score, fewer images


# ------------------------------------------------------------------------------ ROAD's imputation
@pytest.mark.parametrize("size, fraction", [((32, 32), 0.8), ((32, 32), 0.2), ((7, 5), 0.5)])
def test_imputation_solves_grad_cams_system(size, fraction):
    """The same equations as grad-cam's NoisyLinearImputer (its noise off), built and solved faster."""
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(size=(3, *size))).float()
    removed = rng.random(size) < fraction
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    theirs = NoisyLinearImputer(noise=0)(image, torch.from_numpy((~removed).astype(np.float32)))
    ours = faithfulness.impute(image, removed, torch.Generator(), noise=0)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.equal(ours[:, ~torch.from_numpy(removed)], image[:, ~torch.from_numpy(removed)])
    noisy = faithfulness.impute(image, removed, torch.Generator().manual_seed(1))
    assert 0 < (noisy - ours).abs().max() < 6 * faithfulness.NOISE  # the noise, on the holes only


def test_removal_takes_exactly_the_fraction_even_from_a_map_of_ties():
    maps = np.zeros((2, 10, 10), np.float32)
    maps[0, :5] = 1.0   # half the map high, the other half one tie of zeros
    keys = np.random.default_rng(0).random((2, 100))
    for fraction in faithfulness.REMOVED:
        most, least = (faithfulness.removal(maps, fraction, m, keys) for m in (True, False))
        assert (most.sum((1, 2)) == round(100 * fraction)).all() and (least.sum((1, 2)) == round(100 * fraction)).all()
    most = faithfulness.removal(maps, 0.4, True, keys)
    assert most[0, :5].sum() == 40 and not most[0, 5:].any()  # the highest values first


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()


def test_road_uses_its_own_generator_and_repeats_itself():
    model, images = tiny_model(), torch.randn(3, 3, 16, 16)
    maps = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = faithfulness.road(model, images, maps, [0, 1, 2], seed=5)
    assert torch.equal(torch.get_rng_state(), before), "the caller's RNG was drawn from or reseeded"
    again, other = (faithfulness.road(model, images, maps, [0, 1, 2], seed=s) for s in (5, 6))
    assert all(np.array_equal(first[k], again[k]) for k in ("morf", "lerf"))
    assert not np.array_equal(first["morf"], other["morf"])
    assert first["morf"].shape == (3,)


# ------------------------------------------------------------------------- the comparison protocol
class TopLeft(torch.nn.Module):
    """Zeroes all but the top-left quarter of the image: the model below sees nothing else, so a map
    of that quarter is faithful by construction and a map of the rest is its opposite."""

    def forward(self, x):
        keep = torch.zeros_like(x)
        keep[..., :x.shape[-2] // 2, :x.shape[-1] // 2] = 1
        return x * keep


def quarter_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(OrderedDict(
        window=TopLeft(), stem=torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU()),
        head=torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))))
    with torch.no_grad():
        model.head[2].weight.mul_(100)  # confident: removing what it sees moves its softmax
    return model.eval()


@pytest.fixture(scope="module")
def synthetic(data_dir):
    """(normalised test images of the synthetic set, the quarter model, its predicted classes)."""
    x = torch.from_numpy(pipeline.load_cifar10(data_dir, download=False).test_images[:64]).permute(0, 3, 1, 2)
    images = (x.float() / 255 - 0.5) / 0.25
    model = quarter_model()
    with torch.no_grad():
        return images, model, model(images).argmax(1).numpy()


def quarter(model, images, classes, top_left=True):
    maps = np.zeros((len(images), *images.shape[-2:]), np.float32)
    maps[:, :16, :16] = 1
    return maps if top_left else 1 - maps


def brightness(model, images, classes):
    """A 'method' that never looks at the model."""
    b = images.mean(1).numpy()
    low, high = b.min((1, 2), keepdims=True), b.max((1, 2), keepdims=True)
    return (b - low) / (high - low)


def noise(model, images, classes):
    return faithfulness.random_maps(len(images), (8, 8), (32, 32), torch.Generator().manual_seed(99))


SPEC = comparison.Spec("stem", (8, 8), sanity_images=0, seed=0)


def test_a_faithful_map_ranks_first_its_opposite_last_and_the_random_map_between(synthetic):
    images, model, classes = synthetic
    table = comparison.compare(model, images[:16], classes[:16],
                               {"opposite": partial(quarter, top_left=False), "quarter": quarter}, SPEC)
    assert [r.method for r in table.rows] == ["quarter", comparison.RANDOM, "opposite"]
    assert [r.rank for r in table.rows] == [1, 2, 3] and not any(r.tied for r in table.rows)
    best, worst = table.row("quarter"), table.row("opposite")
    assert best.vs_random.low > 0 and worst.vs_random.high < 0
    assert best.morf.high < 0 and best.lerf.mean > best.morf.mean  # removing what the model sees hurts it
    assert [n.split(" ")[:4] for n in table.notes()] == [["opposite", "scores", "below", "the"]]
    assert all(r.seconds["road"] > 0 for r in table.rows)


def test_intervals_shrink_with_more_images(synthetic):
    images, model, classes = synthetic
    widths = []
    for n in (6, 30):
        row = comparison.compare(model, images[:n], classes[:n], {}, SPEC).row(comparison.RANDOM)
        assert row.score.n == n
        widths.append(row.score.high - row.score.low)
    assert widths[1] < 0.7 * widths[0], widths  # ~0.4 expected: t's quantile and 1/sqrt(n) both fall


def test_a_random_map_scores_at_the_baseline_and_identical_methods_tie(synthetic):
    images, model, classes = synthetic
    table = comparison.compare(model, images[:24], classes[:24], {"noise": noise, "a": quarter, "b": quarter}, SPEC)
    r = table.row("noise")
    assert r.vs_random.low <= 0 <= r.vs_random.high and r.rank == table.row(comparison.RANDOM).rank and r.tied
    assert any("noise: ROAD does not tell its maps from the random map's" in n for n in table.notes())
    assert table.row("a").rank == table.row("b").rank and table.row("a").tied
    (difference,) = [d for a, b, d in table.pairs if {a, b} == {"a", "b"}]
    assert (difference.mean, difference.low, difference.high) == (0, 0, 0)
    assert "| a − b " in table.markdown() and "tied" in table.markdown()


def test_the_same_images_and_seed_give_the_same_table(synthetic):
    images, model, classes = synthetic
    runs = [comparison.compare(model, images[:8], classes[:8], {"noise": noise},
                               comparison.Spec("stem", (8, 8), 0, seed)).as_dict() for seed in (3, 3, 4)]
    for run in runs:
        for row in run["methods"].values():
            row.pop("seconds")
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_a_method_that_ignores_the_weights_fails_the_sanity_check(synthetic):
    images, model, classes = synthetic
    spec = comparison.Spec("stem", (32, 32), sanity_images=6, seed=0)
    table = comparison.compare(model, images[:6], classes[:6],
                               {"brightness": brightness, "gradcam": cams.maker("gradcam", "stem")}, spec)
    assert table.depths == ("head", "stem")  # the blocks with weights, from the output back
    bright, grad = table.row("brightness"), table.row("gradcam")
    assert [s.mean for s in bright.sanity] == [1, 1] and bright.flagged
    assert grad.sanity[-1].mean < sanity.THRESHOLD and not grad.flagged
    assert any(n.startswith("brightness fails the sanity check") for n in table.notes())
    assert table.row(comparison.RANDOM).sanity == ()
    assert brightness(model, images[:6], classes[:6]).shape == (6, 32, 32)


def test_rank_correlations_and_the_cascade():
    rng = np.random.default_rng(0)
    a = rng.random((3, 8, 8))
    assert np.allclose(sanity.rank_correlations(a, a), 1) and np.allclose(sanity.rank_correlations(a, -a), -1)
    flat = np.zeros((3, 8, 8))
    assert sanity.rank_correlations(flat, flat).tolist() == [1, 1, 1]
    assert sanity.rank_correlations(a, flat).tolist() == [0, 0, 0]
    model = quarter_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = [(depth, {k: v.clone() for k, v in m.state_dict().items()}) for depth, m in sanity.cascade(model)]
    assert [d for d, _ in steps] == ["head", "stem"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model itself changed"
    head, both = steps[0][1], steps[1][1]
    assert torch.equal(head["stem.0.weight"], before["stem.0.weight"])
    assert not torch.equal(head["head.2.weight"], before["head.2.weight"])
    assert not torch.equal(both["stem.0.weight"], before["stem.0.weight"])


def test_interval_is_students_t_and_ranks_need_separation():
    iv = intervals.Interval.of([0.1, 0.2, 0.3, 0.4])
    half = student_t.ppf(0.975, 3) * np.std([0.1, 0.2, 0.3, 0.4], ddof=1) / 2
    assert iv.mean == pytest.approx(0.25) and (iv.low, iv.high) == pytest.approx((0.25 - half, 0.25 + half))
    assert intervals.Interval.of([0.9, 1.0, 1.0]).high == 1.0  # clipped to what the quantity can be
    assert iv.text() == f"+0.250 ± {half:.3f}"
    # c beats a on every image; b lies between them, too noisy to be told from either
    a, b, c = np.zeros(10), np.array([2, -2] * 5) + 0.5, np.ones(10)
    assert intervals.ranks({"a": a, "b": b, "c": c}) == {"a": 2, "b": 1, "c": 1}


def test_notes_name_the_blocks_a_method_ignores():
    def row(name, rho):
        one = intervals.Interval(0.3, 0.2, 0.4, 20)
        return comparison.Row(name, one, one, one, one, 1, False, {}, tuple(intervals.Interval.of([r, r]) for r in rho))
    table = comparison.Comparison("layer3", 200, 20, 0, ("fc", "layer4", "layer3"),
                                  (row("eigencam", [1.0, 1.0, 0.1]), row("gradcam", [0.2, 0.9, 0.1]),
                                   row("brightness", [1.0, 1.0, 1.0])), ())
    assert table.notes() == [
        "eigencam's maps stay similar (ρ > 0.5) with fc, layer4 random (ρ = +1.000 ± 0.000, +1.000 ± 0.000): "
        "much of what they show does not come from those weights; fc is the classifier: not from the class "
        "explained either",
        "brightness fails the sanity check although ROAD ranks it first: with every block random its maps keep "
        "ρ = +1.000 ± 0.000: they follow the image, not the weights"]
