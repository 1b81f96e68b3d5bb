"""Tests for the TRADES/YOPO small ConvNet of the paper's MNIST experiment (Table 7)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmcam.models.small_cnn import smallcnn


def test_smallcnn_has_exactly_312202_parameters():
    # conv 1->32: 1*32*9 + 32 = 320        conv 32->32: 32*32*9 + 32 = 9,248
    # conv 32->64: 32*64*9 + 64 = 18,496   conv 64->64: 64*64*9 + 64 = 36,928
    # 28 -> 26 -> 24 -> pool 12 -> 10 -> 8 -> pool 4, so fc1 takes 64*4*4 = 1024 inputs:
    # fc 1024->200: 205,000   fc 200->200: 40,200   fc 200->10: 2,010
    # total = 312,202
    assert sum(p.numel() for p in smallcnn().parameters()) == 312_202


def test_layout_is_four_convolutions_and_three_fully_connected_layers():
    model = smallcnn()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(1024, 200), (200, 200), (200, 10)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2


def test_untrained_network_predicts_the_uniform_distribution():
    """TRADES starts the last layer at zero: every logit is 0 whatever the input."""
    torch.manual_seed(0)
    logits = smallcnn().eval()(torch.rand(4, 1, 28, 28))
    assert torch.count_nonzero(logits) == 0


def test_dropout_is_optional():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 28, 28)
    for dropout, deterministic in ((0.0, True), (0.5, False)):
        model = smallcnn(dropout=dropout).train()
        with torch.no_grad():
            model.classifier[-1].weight.normal_()
            assert torch.equal(model(x), model(x)) is deterministic
    with pytest.raises(ValueError, match="dropout"):
        smallcnn(dropout=1.5)
