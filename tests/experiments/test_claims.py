"""The claims engine on constructed data: each verdict, Holm's adjustment, the tests' p-values and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hmcam.experiments.claims import FIELDS, VERDICTS, Claim, holm, judge, readjust
from hmcam.experiments.inference import ALPHA, paired_interval


def claim(name: str, direction: str = "greater", margin: float = 0.0, unit: str = "images") -> Claim:
    return Claim("test", name, f"claim {name}", "paper", "A minus B, points", unit, direction, margin)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def judged() -> dict[str, dict]:
    rng = np.random.default_rng(0)
    evidence = [
        claim("large").evidence(rng.normal(5, 10, 800), ours="large gain"),
        claim("reversed").evidence(rng.normal(-5, 10, 800), ours="large loss"),
        claim("zero").evidence(rng.normal(0, 10, 800), ours="nothing"),
        claim("capped", "equivalent", 1.0).evidence(ours="-", untestable="the eps cap binds on 100% of steps"),
        claim("seeds", unit="seeds").evidence(
            [52.0, 53.1, 51.8, 52.6, 53.0], versus=[47.2, 48.0, 46.9, 47.7, 48.3], ours="-"
        ),
    ]
    return {record["name"]: record for record in judge(evidence)}


def test_every_record_has_every_field(judged: dict[str, dict]) -> None:
    for record in judged.values():
        assert set(FIELDS) <= set(record) and record["verdict"] in VERDICTS and record["experiment"] == "test"


def test_a_large_effect_is_supported_a_reversed_one_contradicted(judged: dict[str, dict]) -> None:
    large, reversed_ = judged["large"], judged["reversed"]
    assert large["verdict"] == "supported" and large["ci_low"] > 0 and large["p_adjusted"] < ALPHA
    assert reversed_["verdict"] == "contradicted" and reversed_["ci_high"] < 0 and reversed_["p_opposite"] < ALPHA
    assert large["ci_low"] < large["estimate"] < large["ci_high"] and large["n"] == 800


def test_a_zero_effect_is_inconclusive_with_its_minimum_detectable_effect(judged: dict[str, dict]) -> None:
    zero = judged["zero"]
    assert zero["verdict"] == "inconclusive" and zero["ci_low"] < 0 < zero["ci_high"]
    # (z_{1 - alpha / 4 claims} + z_{0.8}) * sd / sqrt(n), sd 10 and n 800: about 1.07 points.
    expected = (stats.norm.ppf(1 - ALPHA / 4) + stats.norm.ppf(0.8)) * 10 / np.sqrt(800)
    assert zero["mde"] == pytest.approx(expected, rel=0.15)
    assert f"{zero['mde']:.3g}" in zero["reason"]


def test_an_untestable_claim_keeps_its_reason_and_no_statistics(judged: dict[str, dict]) -> None:
    capped = judged["capped"]
    assert capped["verdict"] == "untestable" and "cap" in capped["reason"]
    assert capped["estimate"] is None and capped["p_value"] is None and capped["n"] == 0


def test_independent_seeds_use_welch(judged: dict[str, dict]) -> None:
    seeds = judged["seeds"]
    welch = stats.ttest_ind([52.0, 53.1, 51.8, 52.6, 53.0], [47.2, 48.0, 46.9, 47.7, 48.3], equal_var=False)
    assert seeds["p_value"] == pytest.approx(welch.pvalue / 2, rel=1e-3)
    assert seeds["verdict"] == "supported" and seeds["n"] == 5


def test_the_sign_flip_test_is_exact_on_few_units() -> None:
    # Six positive differences: of the 64 sign patterns only all-positive reaches the observed mean.
    (record,) = judge([claim("six").evidence([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], ours="-")])
    assert record["p_value"] == pytest.approx(1 / 64, rel=1e-3) and record["verdict"] == "supported"


def test_too_few_units_or_no_spread_are_said_so() -> None:
    few, flat = judge([claim("few").evidence([1.0, 2.0, 3.0], ours="-"), claim("flat").evidence([0.0] * 40, ours="-")])
    # Three units: the smallest reachable p is 1/8, so no outcome could be significant.
    assert few["verdict"] == "untestable" and "1/8" in few["reason"] and few["estimate"] is None
    # Forty equal differences: no variance to size a detectable effect by.
    assert flat["verdict"] == "inconclusive" and flat["mde"] is None and "same value" in flat["reason"]


def test_noninferiority_and_equivalence_use_their_margins() -> None:
    rng = np.random.default_rng(1)
    slightly_worse = rng.normal(-0.5, 3, 1500)
    records = {
        r["name"]: r
        for r in judge(
            [
                claim("within", "noninferior", 2.0).evidence(slightly_worse, ours="-"),
                claim("beyond", "noninferior", 2.0).evidence(slightly_worse - 3.0, ours="-"),
                claim("equal", "equivalent", 1.0).evidence(rng.normal(0, 3, 1500), ours="-"),
                claim("apart", "equivalent", 1.0).evidence(rng.normal(3, 3, 1500), ours="-"),
                claim("less", "less").evidence(slightly_worse, ours="-"),
            ]
        )
    }
    assert records["within"]["verdict"] == "supported"
    assert records["beyond"]["verdict"] == "contradicted"
    assert records["equal"]["verdict"] == "supported"
    assert records["apart"]["verdict"] == "contradicted"
    assert records["less"]["verdict"] == "supported"


def test_holm_against_hand_computed_values() -> None:
    # Sorted 0.01, 0.02, 0.03, 0.5: times 4, 3, 2, 1, then made monotone.
    assert holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_adjustment_can_turn_a_marginal_claim_inconclusive() -> None:
    rng = np.random.default_rng(2)
    noise = rng.normal(0.0, 10, 900)
    # Mean 2.6 standard errors above 0: one-sided p about 0.005 alone, about 0.06 after Holm among 12 claims.
    marginal = (noise - noise.mean()) / noise.std(ddof=1) * 10 + 2.6 * 10 / 30
    (alone,) = judge([claim("marginal").evidence(marginal, ours="-")])
    crowd = [claim(f"null{i}").evidence(rng.normal(0, 10, 900), ours="-") for i in range(11)]
    together = {r["name"]: r for r in judge([claim("marginal").evidence(marginal, ours="-"), *crowd])}
    assert alone["verdict"] == "supported"
    assert together["marginal"]["p_value"] == alone["p_value"]
    assert together["marginal"]["p_adjusted"] > alone["p_adjusted"]
    assert together["marginal"]["verdict"] == "inconclusive"


def test_readjust_makes_one_family_of_several_runs(judged: dict[str, dict]) -> None:
    records = list(judged.values())
    again = readjust(records + records[:1])
    assert len(again) == len(records) + 1 and again[0]["p_value"] == records[0]["p_value"]
    assert again[3]["verdict"] == "untestable" and again[0]["verdict"] == "supported"
    assert again[0]["p_adjusted"] >= records[0]["p_adjusted"]


def test_paired_interval_is_the_mean_with_a_bca_interval() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(2, 4, 2000)
    interval = paired_interval(values)
    error = values.std(ddof=1) / np.sqrt(values.size)
    assert interval["estimate"] == pytest.approx(values.mean(), abs=1e-4)
    assert interval["ci_high"] - interval["ci_low"] == pytest.approx(2 * 1.96 * error, rel=0.15)
    assert paired_interval([1.5, 1.5]) == {"estimate": 1.5, "ci_low": 1.5, "ci_high": 1.5}


def test_bad_input_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="direction"):
        claim("x", "bigger")
    with pytest.raises(ValueError, match="needs a margin"):
        claim("x", "equivalent")
    with pytest.raises(ValueError, match="margin"):
        claim("x", "greater", -1.0)
    with pytest.raises(ValueError, match="at least one value"):
        claim("x").evidence([], ours="-")
    with pytest.raises(ValueError, match="at least 2 values"):
        claim("x").evidence([1.0], versus=[2.0, 3.0], ours="-")
    with pytest.raises(ValueError, match="finite"):
        claim("x").evidence([1.0, float("nan")], ours="-")
    with pytest.raises(ValueError, match="distinct names"):
        judge([claim("x").evidence([1.0], ours="-"), claim("x").evidence([2.0], ours="-")])
    with pytest.raises(ValueError, match="at least one difference"):
        paired_interval([])


def _clustered(shift: float, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three clusters of 200 units each: the common effect ``shift``, cluster offsets of size ``spread``."""
    rng = np.random.default_rng(seed)
    offsets = spread * np.array([-1.0, 0.0, 1.0])
    values = np.concatenate([rng.normal(shift + offset, 1.0, 200) for offset in offsets])
    return values, np.repeat([0, 1, 2], 200)


def test_clustered_units_use_the_two_stage_bootstrap() -> None:
    claim = Claim("e", "c", "c", "p", "s", "images", "greater")
    values, groups = _clustered(0.5, 0.05)
    record = judge([claim.evidence(values, ours="-", groups=groups)])[0]
    means = [values[groups == g].mean() for g in range(3)]
    assert record["estimate"] == pytest.approx(np.mean(means), abs=1e-4)
    assert record["unit"] == "3 zoo seeds x images" and record["n"] == 600
    assert record["verdict"] == "supported" and record["ci_low"] < record["estimate"] < record["ci_high"]
    # The same values as one sample of images: the interval ignores the clusters.
    flat = judge([claim.evidence(values, ours="-")])[0]
    assert flat["ci_high"] - flat["ci_low"] == pytest.approx(record["ci_high"] - record["ci_low"], rel=0.3)


def test_a_difference_between_zoos_widens_the_interval_and_can_hide_an_effect() -> None:
    claim = Claim("e", "c", "c", "p", "s", "images", "greater")
    values, groups = _clustered(0.3, 1.0)
    clustered = judge([claim.evidence(values, ours="-", groups=groups)])[0]
    flat = judge([claim.evidence(values, ours="-")])[0]
    # Pooled as if one zoo, the images alone make the effect look certain; the zoos say it is not.
    assert flat["verdict"] == "supported"
    assert clustered["verdict"] == "inconclusive" and clustered["mde"] > 0.3
    assert clustered["ci_high"] - clustered["ci_low"] > 3 * (flat["ci_high"] - flat["ci_low"])


def test_a_reversed_clustered_effect_is_contradicted() -> None:
    claim = Claim("e", "c", "c", "p", "s", "images", "greater")
    values, groups = _clustered(-0.6, 0.05)
    assert judge([claim.evidence(values, ours="-", groups=groups)])[0]["verdict"] == "contradicted"


def test_groups_must_label_each_paired_unit() -> None:
    claim = Claim("e", "c", "c", "p", "s", "images", "greater")
    with pytest.raises(ValueError, match="one label per value"):
        claim.evidence([1.0, 2.0, 3.0], ours="-", groups=[0, 1])
    with pytest.raises(ValueError, match="one label per value"):
        claim.evidence([1.0, 2.0, 3.0], versus=[1.0, 2.0], ours="-", groups=[0, 1, 2])
