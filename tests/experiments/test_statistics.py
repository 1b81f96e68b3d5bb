"""Paired bootstrap intervals and verdicts, against hand-computed values and known cases."""

from __future__ import annotations

import pytest
import torch

from hmcam.experiments.verdicts import paired_bootstrap, verdict


def test_identical_outcomes_differ_by_exactly_zero() -> None:
    outcomes = torch.tensor([1.0, 0.0, 1.0, 1.0])
    difference = paired_bootstrap(outcomes, outcomes)
    assert (difference.difference, difference.low, difference.high) == (0.0, 0.0, 0.0)
    assert difference.significant == "tie" and difference.images == 4


def test_a_constant_gain_has_a_degenerate_interval_at_the_gain() -> None:
    # Every image gains exactly 0.5 (seed-averaged): every resample has mean 0.5.
    first = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    second = torch.zeros(2, 3)
    difference = paired_bootstrap(first, second)
    assert difference.difference == difference.low == difference.high == pytest.approx(0.5)
    assert difference.significant == "higher"
    assert difference.to_dict()["difference_points"] == 50.0


def test_the_interval_is_about_two_standard_errors_wide() -> None:
    generator = torch.Generator().manual_seed(0)
    first = (torch.rand(2000, generator=generator) < 0.6).float()
    second = (torch.rand(2000, generator=generator) < 0.5).float()
    difference = paired_bootstrap(first, second)
    paired = first - second
    standard_error = float(paired.std() / paired.numel() ** 0.5)
    assert difference.high - difference.low == pytest.approx(2 * 1.96 * standard_error, rel=0.15)
    assert difference.low < difference.difference < difference.high and difference.significant == "higher"


def test_bad_input_and_verdicts() -> None:
    with pytest.raises(ValueError, match="same"):
        paired_bootstrap(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(torch.zeros(3), torch.zeros(3), level=1.5)
    assert verdict(["higher", "higher"]) == "holds"
    assert verdict(["higher", "tie", "lower"]) == "partly"
    assert verdict(["tie", "lower"]) == "does not hold"
    with pytest.raises(ValueError, match="at least one"):
        verdict([])
