"""Tests for the fully connected baseline network."""

from __future__ import annotations

import pytest
import torch

from hmcam.models.mlp import mlp


def test_default_mlp_has_exactly_269322_parameters():
    # 784 -> 256: 200,960   256 -> 256: 65,792   256 -> 10: 2,570   total 269,322
    assert sum(p.numel() for p in mlp().parameters()) == 269_322


def test_hidden_widths_are_configurable():
    model = mlp(num_classes=3, hidden=[16])
    # 784*16 + 16 + 16*3 + 3
    assert sum(p.numel() for p in model.parameters()) == 12_611
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 3)


def test_wrong_input_size_is_rejected_with_the_expected_size():
    with pytest.raises(ValueError, match="expects 784 input values"):
        mlp()(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("hidden", [[0], [16, -1], [2.5], [True]])
def test_invalid_hidden_widths_are_rejected(hidden):
    with pytest.raises(ValueError, match="hidden widths"):
        mlp(hidden=hidden)
