"""ESS and R-hat: ArviZ's values on fixed traces, and the known answers on synthetic chains."""

from __future__ import annotations

import math

import pytest
import torch

from hmcam.evaluation.mcmc import autocovariance, effective_sample_size, normal_scores, rhat, split_chains


def _fixed_traces() -> dict[str, torch.Tensor]:
    wiggly = [[math.sin(1.7 * i + c) + 0.3 * math.cos(0.37 * i * i + 2 * c) for i in range(41)] for c in range(3)]
    drifting = [[math.sin(0.05 * i + c) + 0.5 * c for i in range(40)] for c in range(4)]
    indicator = [[float((i * 7 + c * 3) % 5 == 0) for i in range(20)] for c in range(2)]
    return {
        name: torch.tensor(chains, dtype=torch.float64)
        for name, chains in (("wiggly", wiggly), ("drifting", drifting), ("indicator", indicator))
    }


# arviz 0.23.4: az.ess(x, method=...) and az.rhat(x, method=...) on the traces above.
ARVIZ = {
    "wiggly": (173.02621149024858, 175.65510707785316, 0.986952773935736, 0.978169551830258),
    "drifting": (6.430932751278725, 6.133707038559206, 2.065366416634777, 2.264733868711004),
    "indicator": (64.08239965311849, 64.08239965311849, 0.9486832980505138, 0.9486832980505138),
}


@pytest.mark.parametrize("name", sorted(ARVIZ))
def test_values_match_arviz(name: str) -> None:
    trace = _fixed_traces()[name]
    bulk, mean, rank, split = ARVIZ[name]
    assert effective_sample_size(trace) == pytest.approx(bulk, rel=1e-9)
    assert effective_sample_size(trace, method="mean") == pytest.approx(mean, rel=1e-9)
    assert rhat(trace) == pytest.approx(rank, rel=1e-9)
    assert rhat(trace, method="split") == pytest.approx(split, rel=1e-9)


def test_pieces_by_hand() -> None:
    trace = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]], dtype=torch.float64)
    assert split_chains(trace).tolist() == [[1.0, 2.0], [4.0, 5.0]]  # the middle draw is dropped
    # Centered 1, -1, 1, -1: c_0 = 1, c_1 = -3/4, c_2 = 2/4, c_3 = -1/4.
    alternating = torch.tensor([[2.0, 0.0, 2.0, 0.0]], dtype=torch.float64)
    assert autocovariance(alternating)[0].tolist() == pytest.approx([1.0, -0.75, 0.5, -0.25])
    ties = normal_scores(torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    # Ranks 1.5 and 3.5 of 4: Phi^-1((r - 3/8) / 4.25).
    low, high = torch.special.ndtri(torch.tensor([1.125 / 4.25, 3.125 / 4.25], dtype=torch.float64)).tolist()
    assert ties.reshape(-1).tolist() == pytest.approx([low, high, high, low])


def test_independent_draws_give_about_every_draw() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = torch.randn(8, 500, generator=generator, dtype=torch.float64)
    assert 0.85 * 4000 < effective_sample_size(draws) < 1.15 * 4000
    assert 0.85 * 4000 < effective_sample_size(draws, method="mean") < 1.15 * 4000
    assert abs(rhat(draws) - 1) < 0.01 and abs(rhat(draws, method="split") - 1) < 0.01


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_an_ar1_chain_has_the_known_effective_size(phi: float) -> None:
    generator = torch.Generator().manual_seed(1)
    chains, length = 8, 4000
    noise = torch.randn(chains, length, generator=generator, dtype=torch.float64)
    draws = torch.empty_like(noise)
    draws[:, 0] = noise[:, 0] / math.sqrt(1 - phi**2)  # start in the stationary distribution
    for i in range(1, length):
        draws[:, i] = phi * draws[:, i - 1] + noise[:, i]
    expected = chains * length * (1 - phi) / (1 + phi)
    assert 0.8 * expected < effective_sample_size(draws, method="mean") < 1.2 * expected
    assert 0.8 * expected < effective_sample_size(draws) < 1.2 * expected


def test_chains_with_shifted_means_have_a_large_rhat() -> None:
    generator = torch.Generator().manual_seed(2)
    draws = torch.randn(4, 200, generator=generator, dtype=torch.float64)
    draws[2:] += 1.0
    assert rhat(draws) > 1.1 and rhat(draws, method="split") > 1.1
    assert effective_sample_size(draws) < 0.5 * draws.numel()


def test_constant_traces_and_bad_input() -> None:
    constant = torch.ones(3, 10)
    assert effective_sample_size(constant) == 30 and math.isnan(rhat(constant))
    with pytest.raises(ValueError, match=r"\[chains, draws\]"):
        effective_sample_size(torch.ones(10))
    with pytest.raises(ValueError, match="at least 2 chain"):
        rhat(torch.randn(1, 10))
    with pytest.raises(ValueError, match="4 draws"):
        effective_sample_size(torch.randn(2, 3))
    with pytest.raises(ValueError, match="unknown ESS method"):
        effective_sample_size(torch.randn(2, 8), method="tail")
    assert math.isnan(effective_sample_size(torch.tensor([[1.0, math.nan, 2.0, 3.0]])))
