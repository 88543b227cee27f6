"""The explain package's statistics, on numbers and the tiny synthetic set: when an accuracy is at
chance (common.chance, shared with training), ROAD's imputation and removal."""
import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from scipy.stats import binom

from common import chance
from explain import faithfulness


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
