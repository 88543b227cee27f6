"""Means over images with their 95 % intervals, and ranks that only separate what the intervals do."""
import numpy as np

from common.intervals import Interval as Mean


class Interval(Mean):
    """A mean over images and its 95 % interval (common.intervals), as the comparison's tables write it."""

    @classmethod
    def of(cls, values, bounds=(-1.0, 1.0)) -> "Interval":
        """Clipped to what the quantity can be (a change of probability, a correlation: [-1, 1])."""
        return super().of(values, bounds)

    def text(self) -> str:
        """+0.123 ± 0.010: the half width on the side the bounds did not cut."""
        return f"{signed(self.mean)} ± {max(self.high - self.mean, self.mean - self.low):.3f}"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def ranks(scores: dict) -> dict:
    """Per name, 1 + how many others are better with the paired difference's interval above 0 (higher
    is better; scores: name -> per-image values, the same images in the same order for all). Names no
    interval separates share a rank: a rank is never taken from a tie."""
    names = list(scores)
    better = {a: sum(Interval.of(np.subtract(scores[b], scores[a])).low > 0 for b in names if b != a)
              for a in names}
    return {a: 1 + better[a] for a in names}


def signed(value: float) -> str:
    """A value with its sign (+0.123, −0.123), and 0.000 unsigned where it rounds to zero: a bare
    "-0.000" reads as a verdict it is not."""
    text = f"{value:+.3f}"
    return "0.000" if float(text) == 0 else text.replace("-", "−")
