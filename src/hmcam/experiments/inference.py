"""The statistics behind a claim's verdict: bootstrap intervals, permutation and Welch tests, the mde.

:func:`test` estimates a statistic from per-unit values with a 95% BCa bootstrap interval
(:func:`scipy.stats.bootstrap`) and gives one-sided p-values for and against a direction: a
sign-flip permutation test (:func:`scipy.stats.permutation_test`) for paired units, Welch's t-test
(:func:`scipy.stats.ttest_ind`) for two independent samples, and for paired units from several
clusters (zoo seeds) a two-stage bootstrap, clusters then units. The minimum detectable effect at
:data:`POWER` says what an inconclusive test could have missed. :mod:`hmcam.experiments.claims`
turns these into verdicts. Every test is one-sided at :data:`ALPHA` per side.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

#: The level of each one-sided test (both sides together: a 95% two-sided test).
ALPHA = 0.025
#: The power at which the minimum detectable effect is given.
POWER = 0.8
#: Bootstrap and permutation resamples.
RESAMPLES = 4999
#: Resamples computed at once (bounds the memory on many units).
BATCH = 250

#: What a test is of: the direction ("greater", "less", "noninferior" or "equivalent") and its margin.
Hypothesis = tuple[str, float]


def as_array(values: Any) -> np.ndarray | None:
    """``values`` as a flat float array (None stays None); a ValueError when one is not finite."""
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise ValueError("claim evidence must be finite numbers")
    return array


@dataclass(frozen=True)
class TestResult:
    """A test's estimate, its 95% interval, the one-sided p-values for and against, and the mde (None: no spread)."""

    estimate: float
    low: float
    high: float
    p_support: float
    p_oppose: float
    mde: float | None


def _interval(samples: tuple[np.ndarray, ...], statistic: Any, seed: int) -> tuple[float, float]:
    """95% BCa interval; percentile where BCa is degenerate; the point itself for constant data."""
    if all(np.ptp(sample) == 0 for sample in samples):
        value = float(statistic(*samples))
        return value, value
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                samples,
                statistic,
                n_resamples=RESAMPLES,
                confidence_level=1 - 2 * ALPHA,
                method=method,
                rng=np.random.default_rng(seed),
                vectorized=True,
                batch=BATCH,
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    raise RuntimeError("the bootstrap gave no finite interval")  # unreachable for non-constant finite data


def _mean(sample: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(np.mean(sample, axis=axis))


def _mean_difference(first: np.ndarray, second: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(np.mean(first, axis=axis) - np.mean(second, axis=axis))


def _paired_p(shifted: np.ndarray, seed: int) -> tuple[float, float]:
    """Sign-flip permutation p-values of mean(shifted) > 0 and < 0 (one null distribution for both)."""
    if np.all(shifted == 0):
        return 1.0, 1.0
    result = stats.permutation_test(
        (shifted,),
        _mean,
        permutation_type="samples",
        alternative="greater",
        n_resamples=RESAMPLES,
        rng=np.random.default_rng(seed),
        vectorized=True,
        batch=BATCH,
    )
    null, observed = result.null_distribution, float(result.statistic)
    # scipy's tolerance for ties of the statistic with the null distribution, and its +1 (exact when enumerated).
    tolerance = 1e-14 * max(1.0, abs(observed))
    exact = null.size < RESAMPLES
    extra = 0 if exact else 1
    greater = (np.count_nonzero(null >= observed - tolerance) + extra) / (null.size + extra)
    less = (np.count_nonzero(null <= observed + tolerance) + extra) / (null.size + extra)
    return float(greater), float(less)


def _welch_p(first: np.ndarray, second: np.ndarray, shift: float) -> tuple[float, float]:
    """Welch's t-test p-values of mean(first) - mean(second) > shift and < shift."""
    if np.ptp(first) == 0 and np.ptp(second) == 0:
        difference = float(first.mean() - second.mean()) - shift
        return (0.0, 1.0) if difference > 0 else (1.0, 0.0) if difference < 0 else (1.0, 1.0)
    ps = [
        float(stats.ttest_ind(first - shift, second, equal_var=False, alternative=alternative).pvalue)
        for alternative in ("greater", "less")
    ]
    return ps[0], ps[1]


def _critical(level: float, df: float | None) -> float:
    return float(stats.norm.ppf(level) if df is None else stats.t.ppf(level, df))


def _mde(first: np.ndarray, second: np.ndarray | None, alpha: float) -> float | None:
    """The smallest true effect the test would find with :data:`POWER` at level ``alpha`` (statistic's unit).

    None when the units show no spread (every difference equal): the run then gives no variance to size it by.
    """
    if second is None:
        n = first.size
        error = float(np.std(first, ddof=1)) / math.sqrt(n) if n > 1 else math.inf
        df: float | None = None if n > 30 else max(n - 1, 1)
    else:
        va, vb = np.var(first, ddof=1) / first.size, np.var(second, ddof=1) / second.size
        error = math.sqrt(va + vb)
        # The Welch-Satterthwaite degrees of freedom; few seeds make the detectable effect large.
        denominator = va**2 / (first.size - 1) + vb**2 / (second.size - 1)
        df = float((va + vb) ** 2 / denominator) if denominator > 0 else None
    if not error > 0 or not math.isfinite(error):
        return None
    return (_critical(1 - alpha, df) + _critical(POWER, df)) * error


def _two_stage(values: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """:data:`RESAMPLES` two-stage bootstrap estimates: clusters drawn with replacement, then units within each.

    The estimate is the mean of the cluster means, so each zoo weighs the same whatever its count of units.
    """
    rng = np.random.default_rng(seed)
    members = [values[groups == label] for label in np.unique(groups)]
    count = len(members)
    estimates = np.empty(RESAMPLES)
    for start in range(0, RESAMPLES, BATCH):
        size = min(BATCH, RESAMPLES - start)
        chosen = rng.integers(count, size=(size, count))
        means = np.zeros((size, count))
        for label, member in enumerate(members):
            slots = chosen == label
            drawn = int(slots.sum())
            if drawn:
                # Each slot that drew this cluster resamples its units anew.
                means[slots] = member[rng.integers(member.size, size=(drawn, member.size))].mean(axis=1)
        estimates[start : start + size] = means.mean(axis=1)
    return estimates


def _clustered_test(
    first: np.ndarray, groups: np.ndarray, direction: Hypothesis, seed: int, alpha: float
) -> TestResult:
    """The two-stage bootstrap's estimate, percentile interval, p-values and mde for clustered paired units.

    A one-sided p is the share of bootstrap estimates on the wrong side of the tested value (+1 in
    both counts), the test that inverts the percentile interval; the mde uses the bootstrap's spread.
    """
    estimate = float(np.mean([first[groups == label].mean() for label in np.unique(groups)]))
    boot = _two_stage(first, groups, seed)
    low, high = (float(q) for q in np.quantile(boot, [ALPHA, 1 - ALPHA]))

    def p_values(shift: float) -> tuple[float, float]:
        greater = (np.count_nonzero(boot <= shift) + 1) / (boot.size + 1)
        less = (np.count_nonzero(boot >= shift) + 1) / (boot.size + 1)
        return float(greater), float(less)

    p_support, p_oppose = _directed(direction, p_values)
    error = float(np.std(boot, ddof=1))
    mde = (_critical(1 - alpha, None) + _critical(POWER, None)) * error if error > 0 else None
    return TestResult(estimate, low, high, p_support, p_oppose, mde)


def _directed(direction: Hypothesis, p_values: Callable[[float], tuple[float, float]]) -> tuple[float, float]:
    """The p-values for and against ``direction`` from ``p_values(shift)`` = (p of > shift, p of < shift)."""
    kind, margin = direction
    if kind == "greater":
        p_support, p_oppose = p_values(0.0)
    elif kind == "less":
        p_oppose, p_support = p_values(0.0)
    elif kind == "noninferior":
        # Supported above -margin; contradicted when significantly below it.
        p_support, p_oppose = p_values(-margin)
    else:
        above_low, below_low = p_values(-margin)
        above_high, below_high = p_values(margin)
        # Two one-sided tests for the claim; outside the margin on either side against it.
        p_support = max(above_low, below_high)
        p_oppose = min(1.0, 2 * min(below_low, above_high))
    return float(p_support), float(p_oppose)


def test(
    first: np.ndarray,
    second: np.ndarray | None,
    groups: np.ndarray | None,
    direction: Hypothesis,
    *,
    seed: int,
    alpha: float,
) -> TestResult:
    """Estimate, interval, the one-sided p-values for and against ``direction``, and the mde at ``alpha``.

    ``first`` alone: paired differences (clustered by ``groups`` when they come from several clusters);
    with ``second``: two independent samples. ``direction`` is (``greater``/``less``/``noninferior``/
    ``equivalent``, margin).
    """
    if groups is not None and len(np.unique(groups)) > 1:
        return _clustered_test(first, groups, direction, seed, alpha)
    if second is None:
        estimate = float(first.mean())
        low, high = _interval((first,), _mean, seed)
    else:
        estimate = float(first.mean() - second.mean())
        low, high = _interval((first, second), _mean_difference, seed)

    def p_values(shift: float) -> tuple[float, float]:
        if second is None:
            return _paired_p(first - shift, seed)
        return _welch_p(first, second, shift)

    p_support, p_oppose = _directed(direction, p_values)
    return TestResult(estimate, low, high, p_support, p_oppose, _mde(first, second, alpha))


def paired_interval(differences: Any, *, seed: int = 0) -> dict[str, float]:
    """Mean of per-unit paired ``differences`` with its 95% BCa interval: ``estimate``, ``ci_low``, ``ci_high``.

    For the tables of every pair's difference beside a claim (the claim itself is tested by
    :func:`hmcam.experiments.claims.judge`).
    """
    values = as_array(differences)
    if values is None or values.size == 0:
        raise ValueError("an interval needs at least one difference")
    low, high = _interval((values,), _mean, seed)
    return {"estimate": round(float(values.mean()), 4), "ci_low": round(low, 4), "ci_high": round(high, 4)}
