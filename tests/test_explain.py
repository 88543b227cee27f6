"""The explain package's statistics, on numbers and the tiny synthetic set: when an accuracy is at
chance (common.chance, shared with training)."""
import pytest
from scipy.stats import binom

from common import chance


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
