"""Small, dependency-free statistics for counts and money series.

Daily merchant series are short (a handful of same weekdays) and often small
counts (refunds, failed payments, units of one product), so the detectors use
two ingredients:

* a robust baseline: the median of the last N same weekdays, with the median
  absolute deviation (MAD) as the spread, which one past anomaly cannot move;
* a count test: the observed count against a negative binomial whose mean is
  the baseline and whose variance adds, to the Poisson variance, the
  uncertainty of the baseline itself (a median of ``n`` Poisson values has
  variance about ``pi/2 * mean / n``) and the extra day-to-day dispersion
  (``(kappa * mean)**2``, ``kappa`` from the MAD when there are enough weeks,
  else a prior). With small means this is exact where the normal
  approximation fails (``P(0 | mean 3) = 5%``, not "z = -1.7").

Tails are summed from the observed value outwards and stop once the terms
are negligible, so a test costs a few dozen operations in the usual case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MAD_TO_SD = 1.4826
# Relative day-to-day dispersion assumed when a series is too short to
# estimate it (fewer than MIN_WEEKS_FOR_DISPERSION values).
PRIOR_KAPPA = 0.10
MIN_WEEKS_FOR_DISPERSION = 4


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def mad(values: Sequence[float], centre: float | None = None) -> float:
    """Median absolute deviation around ``centre`` (default: the median)."""
    c = median(values) if centre is None else centre
    return median([abs(v - c) for v in values])


def relative_dispersion(values: Sequence[float], centre: float) -> float:
    """Robust coefficient of variation (``kappa``) of a short series, floored at 5%."""
    if len(values) < MIN_WEEKS_FOR_DISPERSION or centre <= 0:
        return PRIOR_KAPPA
    return max(0.05, MAD_TO_SD * mad(values, centre) / centre)


def count_variance(mean: float, n_baseline: int, kappa: float) -> float:
    """Variance of ``observed - baseline`` for a count whose baseline is a median of ``n`` values."""
    n = max(1, n_baseline)
    return mean * (1.0 + math.pi / 2.0 / n) + (kappa * mean) ** 2


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _log_pmf(k: int, mean: float, size: float | None) -> float:
    """Log pmf of a Poisson (``size`` None) or negative binomial (mean, size) at ``k``."""
    if size is None:
        return k * math.log(mean) - mean - math.lgamma(k + 1)
    p = size / (size + mean)
    return math.lgamma(k + size) - math.lgamma(size) - math.lgamma(k + 1) + size * math.log(p) + k * math.log1p(-p)


def _size_for(mean: float, variance: float) -> float | None:
    """Negative binomial size for a mean and variance; None when Poisson fits."""
    if variance <= mean * 1.0001:
        return None
    return mean * mean / (variance - mean)


def count_tail(observed: int, mean: float, variance: float, upper: bool) -> float:
    """One-sided tail probability of a count.

    Args:
        observed: The observed count (>= 0).
        mean: Expected count (> 0; a tiny floor is applied).
        variance: Variance (>= mean; a larger value means a negative binomial).
        upper: ``P(X >= observed)`` if true, else ``P(X <= observed)``.

    Returns:
        The probability, in [0, 1].
    """
    mean = max(mean, 1e-6)
    size = _size_for(mean, max(variance, mean))
    if upper and observed <= 0:
        return 1.0
    total = 0.0
    k = observed
    step = 1 if upper else -1
    peak = -math.inf
    while k >= 0:
        lp = _log_pmf(k, mean, size)
        peak = max(peak, lp)
        term = math.exp(lp)
        total += term
        # Terms only shrink moving away from the mode: stop once negligible.
        moving_away = (upper and k > mean) or (not upper and k < mean)
        if moving_away and lp < peak - 30:
            break
        if total >= 1.0:
            return 1.0
        k += step
        if upper and k > observed + 100_000:  # pragma: no cover - absurd inputs
            break
    return min(1.0, total)


def zero_probability(mean: float, variance: float) -> float:
    """P(X = 0) for the count model of :func:`count_tail` (cheap closed form)."""
    mean = max(mean, 1e-9)
    size = _size_for(mean, max(variance, mean))
    if size is None:
        return math.exp(-mean)
    return math.exp(size * math.log(size / (size + mean)))


def confidence_from_p(p: float) -> float:
    """Confidence in [0, 1] from a one-sided p-value, rounded for stable storage."""
    return round(max(0.0, min(1.0, 1.0 - p)), 6)
