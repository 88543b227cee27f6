"""Is an accuracy better than guessing? One rule for every place that prints an accuracy (train.py's
last line, viz, its report): a model that guesses among K classes is right on each image with
probability 1/K, so on N images its accuracy lands, 95 % of the time, between the binomial quantiles
computed here. An accuracy at or below the upper one is "at chance": nothing it learned shows, and
the class activation maps of such a model explain nothing."""
import math

LEVEL = 0.95


def guessing_range(classes: int, images: int) -> tuple:
    """(low, high): the central 95 % range of a guesser's accuracy on `images` images of `classes`
    classes, from the exact binomial distribution (small N is where a normal approximation fails)."""
    if images < 1 or classes < 2:
        return 0.0, 1.0
    p, tail = 1 / classes, (1 - LEVEL) / 2
    logs = [math.lgamma(images + 1) - math.lgamma(k + 1) - math.lgamma(images - k + 1)
            + k * math.log(p) + (images - k) * math.log1p(-p) for k in range(images + 1)]
    cdf, low, high = 0.0, None, images
    for k, log_pmf in enumerate(logs):
        cdf += math.exp(log_pmf)
        if low is None and cdf >= tail:
            low = k
        if cdf >= 1 - tail:
            high = k
            break
    return low / images, high / images


def at_chance(accuracy: float, classes: int, images: int) -> bool:
    """True when `accuracy` (a fraction) is no better than guessing: at most the range's upper end."""
    return accuracy <= guessing_range(classes, images)[1] + 1e-12


def chance_note(accuracy: float, classes: int, images: int) -> str:
    """One sentence for a report when the accuracy is at chance, else "" (nothing to say)."""
    if not at_chance(accuracy, classes, images):
        return ""
    low, high = guessing_range(classes, images)
    return (f"at chance: {accuracy:.2%} on {images} images is within what guessing 1 of {classes} classes "
            f"gives 95 % of the time ({low:.1%}-{high:.1%}); this model learned nothing measurable "
            "and its class activation maps mean nothing")
