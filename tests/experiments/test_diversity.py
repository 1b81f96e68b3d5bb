"""Fig. 1's rows from cached outcomes: measures in the table's order, missing diagnostics as None."""

from __future__ import annotations

import math

import torch

from hmcam.experiments.diversity import GENERATOR_KEYS, GENERATORS, MEASURES, SETTINGS, generator_row


def test_generators_have_distinct_cache_stems_and_the_scales_their_sizes() -> None:
    assert len(set(GENERATOR_KEYS.values())) == len(GENERATORS) == 4
    assert [(s.images, s.chains, s.transitions) for s in SETTINGS.values()] == [(3, 2, 4), (20, 5, 10), (20, 50, 10)]


def test_a_row_rounds_the_means_and_turns_a_missing_diagnostic_into_none() -> None:
    outcome = {key: torch.tensor([0.123456, 0.2], dtype=torch.float64) for key in MEASURES[:-1]}
    outcome["first"] = torch.zeros(8, 5)
    outcome["diagnostic.acceptance_rate"] = torch.tensor(0.5, dtype=torch.float64)
    outcome["diagnostic.loss_ess_median"] = torch.tensor(math.nan, dtype=torch.float64)
    row = generator_row("HMCAM", outcome)
    assert list(row) == ["generator", "samples", *MEASURES, "acceptance_rate", "loss_ess_median"]
    assert row["samples"] == 8 and row["distinct_labels"] == round(0.161728, 4)
    assert row["black_box_success"] is None and row["acceptance_rate"] == 0.5 and row["loss_ess_median"] is None
