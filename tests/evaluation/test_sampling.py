"""Sampling diagnostics of chain attacks: diversity metrics by hand, and the diagnostics of real chains."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hmcam.attacks import HMCAM
from hmcam.evaluation.sampling import (
    ChainDiagnostics,
    diagnose,
    distinct_fraction,
    distinct_labels,
    label_entropy,
    mean_pairwise_distance,
)


def test_diversity_metrics_by_hand() -> None:
    predictions = torch.tensor([[3, 1], [3, 2], [5, 1], [3, 1]])  # [N = 4, B = 2]
    assert distinct_labels(predictions).tolist() == [2, 2]
    # Example 0: labels 3, 3, 5, 3 -> shares 3/4, 1/4; example 1: 1, 2, 1, 1 -> the same shares.
    entropy = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert label_entropy(predictions).tolist() == pytest.approx([entropy, entropy])
    # Three samples of one example at 0, 3 and 4 on a line: pairwise distances 3, 4, 1.
    samples = torch.tensor([[[0.0, 0.0]], [[3.0, 0.0]], [[4.0, 0.0]]])  # [N = 3, B = 1, D = 2]
    assert mean_pairwise_distance(samples).tolist() == pytest.approx([8 / 3])
    assert mean_pairwise_distance(samples[:1]).tolist() == [0.0]
    repeated = torch.tensor([[[1.0]], [[2.0]], [[1.0]], [[1.0]]])  # one new value after the first, then repeats
    assert distinct_fraction(repeated).tolist() == [0.5]


def test_diagnostics_of_refreshed_chains_and_of_the_papers_chain(digits_correct, digits_model) -> None:
    x, y = digits_correct
    x, y = x[:12], y[:12]
    paper = diagnose(HMCAM(digits_model, 0.1, steps=2, samples=6, seed=0, chains=3).sample(x, y))
    refreshed = diagnose(
        HMCAM(digits_model, 0.1, steps=2, samples=6, seed=0, chains=3, momentum_refresh=1.0).sample(x, y)
    )
    for diagnostics in (paper, refreshed):
        assert diagnostics.accepted.shape == (6,) and diagnostics.proposals == 36
        for name in ("loss_ess", "loss_rhat", "success_ess", "distinct_labels", "distinct_samples"):
            assert getattr(diagnostics, name).shape == (12,)
        summary = diagnostics.summary()
        assert 0 <= summary["acceptance_rate"] <= 1 and len(summary["acceptance_per_transition"]) == 6
        assert 1 <= summary["distinct_labels"] <= 10
    # The paper's chains of one input differ only by their acceptance draws; refreshed chains visit more points.
    assert refreshed.summary()["distinct_samples"] > paper.summary()["distinct_samples"]
    assert refreshed.summary()["mean_pairwise_l2"] > paper.summary()["mean_pairwise_l2"]


def test_diagnostics_of_batches_join_into_those_of_the_whole(digits_correct, digits_model) -> None:
    x, y = digits_correct
    attack = HMCAM(digits_model, 0.1, steps=2, samples=4, seed=0, chains=2, momentum_refresh=0.5)
    result = attack.sample(x[:10], y[:10])
    whole = diagnose(result)
    names = [field.name for field in dataclasses.fields(result)]
    halves = [
        diagnose(type(result)(**{name: getattr(result, name)[:, :, part] for name in names}))
        for part in (slice(0, 4), slice(4, 10))
    ]
    joined = ChainDiagnostics.join(halves)
    assert torch.equal(joined.accepted, whole.accepted) and joined.proposals == whole.proposals
    torch.testing.assert_close(joined.loss_ess, whole.loss_ess, equal_nan=True)
    torch.testing.assert_close(joined.pairwise_distance, whole.pairwise_distance)
    with pytest.raises(ValueError, match="nothing to join"):
        ChainDiagnostics.join([])
