"""Means over images with their 95 % intervals, and ranks that only separate what the intervals do."""
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t


@dataclass(frozen=True)
class Interval:
    """A mean over n values and its 95 % Student-t interval (low = high = mean for n < 2)."""
    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values, bounds=(-1.0, 1.0)) -> "Interval":
        """Clipped to what the quantity can be (a change of probability, a correlation: [-1, 1])."""
        values = np.asarray(values, np.float64)
        n, mean = len(values), float(values.mean())
        half = float(student_t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        return cls(mean, max(bounds[0], mean - half), min(bounds[1], mean + half), n)

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

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
