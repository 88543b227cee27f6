"""One rule for a mean and its 95 % interval (Student's t), for seeds (a sweep) and images (the
faithfulness comparison) alike."""
import math
from dataclasses import dataclass
from statistics import fmean, stdev


@dataclass(frozen=True)
class Interval:
    """A mean over n values and its 95 % Student-t interval (low = high = mean for n < 2)."""
    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values, bounds=(-math.inf, math.inf)) -> "Interval":
        """Clipped to what the quantity can be (an accuracy: [0, 1]; a correlation: [-1, 1]) rather than
        computed on a bounded scale (logit): such a scale breaks at exactly a bound, which tiny runs reach,
        and changes nothing where the interval lies inside; clipping removes only what no value can be."""
        from scipy.stats import t as student_t  # here: not in every process that imports the caller
        values = [float(v) for v in values]
        n, mean = len(values), fmean(values)
        half = float(student_t.ppf(0.975, n - 1)) * stdev(values) / math.sqrt(n) if n > 1 else 0.0
        return cls(mean, max(bounds[0], mean - half), min(bounds[1], mean + half), n)

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0
