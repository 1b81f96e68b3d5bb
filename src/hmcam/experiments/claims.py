"""The claims engine: each claim of the paper declared before a run, tested one way, adjusted across the run.

A :class:`Claim` is declared in an experiment's module, before any run: the paper's statement and
number, the primary statistic, the unit that is resampled, the direction (``greater``, ``less``,
``noninferior`` or ``equivalent``, the last two with a margin) and the name of the comparison. After
the run the experiment hands in :class:`Evidence` for it: per-unit paired differences (images, each
averaged over the seeds and pairs the statistic names) or two independent samples (one value per
training seed), or the reason the claim is untestable. :func:`judge` then

- estimates the statistic with a 95% BCa bootstrap interval and tests it: a sign-flip permutation
  test for paired units, Welch's t-test for independent seeds, a two-stage bootstrap for units of
  several zoos (:mod:`hmcam.experiments.inference`);
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hmcam.experiments.inference import ALPHA, TestResult, as_array, test

#: The verdicts a claim can get.
VERDICTS = ("supported", "contradicted", "inconclusive", "untestable")
#: Directions a claim can take; the last two need a margin.
DIRECTIONS = ("greater", "less", "noninferior", "equivalent")
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
        return Evidence(self, as_array(values), as_array(versus), ours, untestable, labels)


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
    supported = dict(zip(tests, holm([result.p_support for result in tests.values()]), strict=True))
    opposed = dict(zip(tests, holm([result.p_oppose for result in tests.values()]), strict=True))
    return [_record(item, tests.get(item.claim.name), supported, opposed) for item in evidence]


def _test(item: Evidence, seed: int, alpha: float) -> TestResult:
    assert item.first is not None
    direction = (item.claim.direction, item.claim.margin)
    return test(item.first, item.second, item.groups, direction, seed=seed, alpha=alpha)


def _record(
    item: Evidence, result: TestResult | None, supported: Mapping[str, float], opposed: Mapping[str, float]
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
    if result is None:
        return {
            **record,
            **dict.fromkeys(("estimate", "ci_low", "ci_high", "p_value", "p_adjusted", "p_opposite", "mde")),
            "verdict": "untestable",
            "reason": item.untestable,
        }
    p_adjusted, p_opposite = supported[claim.name], opposed[claim.name]
    verdict, reason = _verdict(p_adjusted, p_opposite, result.mde, "")
    return {
        **record,
        "estimate": round(result.estimate, 4),
        "ci_low": round(result.low, 4),
        "ci_high": round(result.high, 4),
        "p_value": _round_p(result.p_support),
        "p_adjusted": _round_p(p_adjusted),
        # Raw, like p_value: readjust() adjusts both again over a larger family.
        "p_opposite": _round_p(result.p_oppose),
        "mde": None if result.mde is None else round(result.mde, 4),
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
