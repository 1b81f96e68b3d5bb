"""The claims engine: each claim of the paper declared before a run, tested one way, adjusted across the run.

A :class:`Claim` is declared in an experiment's module, before any run: the paper's statement and
number, the primary statistic, the unit that is resampled, the direction (``greater``, ``less``,
``noninferior`` or ``equivalent``, the last two with a margin) and the name of the comparison. After
the run the experiment hands in :class:`Evidence` for it: per-unit paired differences (images, each
averaged over the seeds and pairs the statistic names) or two independent samples (one value per
training seed), or the reason the claim is untestable. :func:`judge` then

- estimates the statistic with a 95% BCa bootstrap interval (:func:`scipy.stats.bootstrap`);
- tests it: a sign-flip permutation test for paired units, Welch's t-test for independent seeds;
- adjusts the p-values of every testable claim of the run with Holm's method;
- gives one of :data:`VERDICTS`: ``supported`` (the adjusted test is significant in the paper's
  direction), ``contradicted`` (significant in the opposite direction), ``inconclusive`` (neither; the
  record gives the minimum detectable effect at 80% power, so a reader sees what could hide) or
  ``untestable`` (with the reason).

Every test is one-sided at :data:`ALPHA` per side, the two sides of a 95% two-sided test.
``docs/experiments.md`` explains the rule and its choices.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

#: The verdicts a claim can get.
VERDICTS = ("supported", "contradicted", "inconclusive", "untestable")
#: Directions a claim can take; the last two need a margin.
DIRECTIONS = ("greater", "less", "noninferior", "equivalent")
#: The level of each one-sided test (both sides together: a 95% two-sided test).
ALPHA = 0.025
#: The power at which the minimum detectable effect is given.
POWER = 0.8
#: Bootstrap and permutation resamples.
RESAMPLES = 4999
#: Resamples computed at once (bounds the memory on many units).
BATCH = 250
#: The fields of a claim record, in the order of ``claims.csv``.
FIELDS = (
    "experiment",
    "name",
    "claim",
    "paper",
    "statistic",
    "unit",
    "n",
    "direction",
    "margin",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "p_opposite",
    "mde",
    "verdict",
    "reason",
    "ours",
)

Direction = Literal["greater", "less", "noninferior", "equivalent"]


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, declared before the run.

    ``statistic`` says in words what is estimated (with its unit, e.g. points), ``unit`` what is
    resampled (``images``, ``seeds``). ``direction``: ``greater`` (the statistic is above 0),
    ``less`` (below 0), ``noninferior`` (above ``-margin``) or ``equivalent`` (within ``±margin``).
    """

    experiment: str
    name: str
    claim: str
    paper: str
    statistic: str
    unit: str
    direction: Direction
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if self.margin < 0 or not math.isfinite(self.margin):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin}")
        if self.direction in ("noninferior", "equivalent") and self.margin == 0:
            raise ValueError(f"a {self.direction} claim needs a margin > 0")

    def evidence(
        self, values: Any = None, *, ours: str, versus: Any = None, untestable: str = "", groups: Any = None
    ) -> Evidence:
        """The :class:`Evidence` for this claim: paired differences ``values``, or ``values`` against ``versus``.

        ``groups`` labels each paired unit with its cluster (the zoo seed that produced it): the units are
        then resampled in two stages, clusters and units within them (:func:`judge`).
        """
        labels = None if groups is None else np.asarray(groups).reshape(-1)
        return Evidence(self, _array(values), _array(versus), ours, untestable, labels)


@dataclass(frozen=True)
class Evidence:
    """What a run found for a claim: paired differences, or two independent samples, or why it is untestable.

    ``first`` alone: one paired difference per unit (in the statistic's unit). ``first`` and
    ``second``: the two arms' values per unit (independent; the statistic is their mean difference).
    ``ours`` is the sentence the report prints. ``groups``, for paired units only, gives each unit's
    cluster (a zoo seed); with two or more clusters the test is the two-stage bootstrap of :func:`judge`.
    """

    claim: Claim
    first: np.ndarray | None
    second: np.ndarray | None
    ours: str
    untestable: str = ""
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.untestable:
            return
        if self.first is None or self.first.size == 0:
            raise ValueError(f"claim {self.claim.name!r} needs at least one value, or a reason it is untestable")
        if self.second is not None and (self.first.size < 2 or self.second.size < 2):
            raise ValueError(f"claim {self.claim.name!r}: independent samples need at least 2 values each")
        if self.groups is not None and (self.second is not None or self.groups.shape != self.first.shape):
            raise ValueError(f"claim {self.claim.name!r}: groups label paired units, one label per value")

    @property
    def clusters(self) -> int:
        """How many clusters (zoo seeds) the paired units come from: 1 without ``groups``."""
        return 1 if self.groups is None else len(np.unique(self.groups))

    @property
    def n(self) -> int:
        """Units resampled: paired units, or the smaller arm."""
        if self.first is None:
            return 0
        return int(self.first.size if self.second is None else min(self.first.size, self.second.size))


def _array(values: Any) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise ValueError("claim evidence must be finite numbers")
    return array


@dataclass(frozen=True)
class _Test:
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


def _mde(evidence: Evidence, alpha: float) -> float | None:
    """The smallest true effect the test would find with :data:`POWER` at level ``alpha`` (statistic's unit).

    None when the units show no spread (every difference equal): the run then gives no variance to size it by.
    """
    first, second = evidence.first, evidence.second
    assert first is not None
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


def _clustered_test(evidence: Evidence, seed: int, alpha: float) -> _Test:
    """The two-stage bootstrap's estimate, percentile interval, p-values and mde for clustered paired units.

    A one-sided p is the share of bootstrap estimates on the wrong side of the tested value (+1 in
    both counts), the test that inverts the percentile interval; the mde uses the bootstrap's spread.
    """
    claim, first, groups = evidence.claim, evidence.first, evidence.groups
    assert first is not None and groups is not None
    estimate = float(np.mean([first[groups == label].mean() for label in np.unique(groups)]))
    boot = _two_stage(first, groups, seed)
    low, high = (float(q) for q in np.quantile(boot, [ALPHA, 1 - ALPHA]))

    def p_values(shift: float) -> tuple[float, float]:
        greater = (np.count_nonzero(boot <= shift) + 1) / (boot.size + 1)
        less = (np.count_nonzero(boot >= shift) + 1) / (boot.size + 1)
        return float(greater), float(less)

    p_support, p_oppose = _directed(claim, p_values)
    error = float(np.std(boot, ddof=1))
    mde = (_critical(1 - alpha, None) + _critical(POWER, None)) * error if error > 0 else None
    return _Test(estimate, low, high, p_support, p_oppose, mde)


def _directed(claim: Claim, p_values: Any) -> tuple[float, float]:
    """The p-values for and against ``claim`` from ``p_values(shift)`` = (p of > shift, p of < shift)."""
    margin = claim.margin
    if claim.direction == "greater":
        p_support, p_oppose = p_values(0.0)
    elif claim.direction == "less":
        p_oppose, p_support = p_values(0.0)
    elif claim.direction == "noninferior":
        # Supported above -margin; contradicted when significantly below it.
        p_support, p_oppose = p_values(-margin)
    else:
        above_low, below_low = p_values(-margin)
        above_high, below_high = p_values(margin)
        # Two one-sided tests for the claim; outside the margin on either side against it.
        p_support = max(above_low, below_high)
        p_oppose = min(1.0, 2 * min(below_low, above_high))
    return float(p_support), float(p_oppose)


def _test(evidence: Evidence, seed: int, alpha: float) -> _Test:
    """Estimate, interval and the one-sided p-values for and against the claim."""
    if evidence.clusters > 1:
        return _clustered_test(evidence, seed, alpha)
    first, second = evidence.first, evidence.second
    assert first is not None
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

    p_support, p_oppose = _directed(evidence.claim, p_values)
    return _Test(estimate, low, high, p_support, p_oppose, _mde(evidence, alpha))


def paired_interval(differences: Any, *, seed: int = 0) -> dict[str, float]:
    """Mean of per-unit paired ``differences`` with its 95% BCa interval: ``estimate``, ``ci_low``, ``ci_high``.

    For the tables of every pair's difference beside a claim (the claim itself is tested by :func:`judge`).
    """
    values = _array(differences)
    if values is None or values.size == 0:
        raise ValueError("an interval needs at least one difference")
    low, high = _interval((values,), _mean, seed)
    return {"estimate": round(float(values.mean()), 4), "ci_low": round(low, 4), "ci_high": round(high, 4)}


def _too_few(item: Evidence) -> Evidence:
    """``item``, untestable when its paired units are too few for a sign-flip test to reach :data:`ALPHA`."""
    if item.untestable or item.second is not None or 0.5**item.n <= ALPHA:
        return item
    reason = f"{item.n} paired units: the smallest p a sign-flip test can reach is 1/{2**item.n} > {ALPHA}"
    return dataclasses.replace(item, untestable=reason)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1), in the input order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def judge(evidence: Sequence[Evidence], *, seed: int = 0) -> list[dict[str, Any]]:
    """The claim records of one run: every field of :data:`FIELDS`, Holm-adjusted across the testable claims."""
    names = [item.claim.name for item in evidence]
    if len(set(names)) != len(names):
        raise ValueError(f"claims of a run need distinct names, got {names}")
    evidence = [_too_few(item) for item in evidence]
    testable = [item for item in evidence if not item.untestable]
    # The minimum detectable effect at the strictest Holm level (alpha / claims): what this run can see.
    alpha = ALPHA / max(len(testable), 1)
    tests = {item.claim.name: _test(item, seed, alpha) for item in testable}
    supported = dict(zip(tests, holm([test.p_support for test in tests.values()]), strict=True))
    opposed = dict(zip(tests, holm([test.p_oppose for test in tests.values()]), strict=True))
    return [_record(item, tests.get(item.claim.name), supported, opposed) for item in evidence]


def _record(
    item: Evidence, test: _Test | None, supported: Mapping[str, float], opposed: Mapping[str, float]
) -> dict[str, Any]:
    claim = item.claim
    record: dict[str, Any] = {
        "experiment": claim.experiment,
        "name": claim.name,
        "claim": claim.claim,
        "paper": claim.paper,
        "statistic": claim.statistic,
        "unit": claim.unit if item.clusters == 1 else f"{item.clusters} zoo seeds x {claim.unit}",
        "n": item.n,
        "direction": claim.direction,
        "margin": claim.margin,
        "ours": item.ours,
    }
    if test is None:
        return {
            **record,
            **dict.fromkeys(("estimate", "ci_low", "ci_high", "p_value", "p_adjusted", "p_opposite", "mde")),
            "verdict": "untestable",
            "reason": item.untestable,
        }
    p_adjusted, p_opposite = supported[claim.name], opposed[claim.name]
    verdict, reason = _verdict(p_adjusted, p_opposite, test.mde, "")
    return {
        **record,
        "estimate": round(test.estimate, 4),
        "ci_low": round(test.low, 4),
        "ci_high": round(test.high, 4),
        "p_value": _round_p(test.p_support),
        "p_adjusted": _round_p(p_adjusted),
        # Raw, like p_value: readjust() adjusts both again over a larger family.
        "p_opposite": _round_p(test.p_oppose),
        "mde": None if test.mde is None else round(test.mde, 4),
        "verdict": verdict,
        "reason": reason,
    }


def _round_p(p: float) -> float:
    return float(f"{p:.4g}")


def _verdict(p_adjusted: float, p_opposite: float, mde: float | None, family: str) -> tuple[str, str]:
    """The verdict and its reason from the Holm-adjusted p-values for and against the paper (``family``: its size)."""
    if p_adjusted < ALPHA:
        return "supported", f"Holm-adjusted p = {p_adjusted:.2g} < {ALPHA} in the paper's direction{family}"
    if p_opposite < ALPHA:
        return "contradicted", f"Holm-adjusted p = {p_opposite:.2g} < {ALPHA} against the paper's direction{family}"
    if mde is None:
        return "inconclusive", f"no significant difference{family}; every unit gave the same value"
    return "inconclusive", f"no significant difference{family}; an effect below {mde:.3g} could hide at 80% power"


def readjust(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Claim records of several runs (a reproduction), Holm-adjusted again across all of them.

    The raw one-sided p-values stay; ``p_adjusted``, the verdict and its reason follow the larger family.
    """
    testable = [i for i, record in enumerate(records) if record.get("p_value") is not None]
    count = max(len(testable), 1)
    supported = holm([float(records[i]["p_value"]) for i in testable])
    opposed = holm([float(records[i]["p_opposite"]) for i in testable])
    out = [dict(record) for record in records]
    for index, p_adjusted, p_opposite in zip(testable, supported, opposed, strict=True):
        record = out[index]
        record["p_adjusted"] = _round_p(p_adjusted)
        record["verdict"], record["reason"] = _verdict(
            p_adjusted, p_opposite, record.get("mde"), f" across {count} claims"
        )
    return out
