"""Tests for the CIFAR ResNet-32 (He et al. 2016, option-A shortcuts)."""

from __future__ import annotations

import pytest
import torch

from hmcam.models.resnet import BasicBlock, CifarResNet, PaddingShortcut, resnet32


def test_resnet32_has_exactly_464154_parameters():
    # Convolutions have no bias, BN has 2 parameters per channel, option-A shortcuts have none.
    # stem: 3*16*9 + 2*16                                           =     464
    # stage 1: 5 blocks * (2 * 16*16*9 + 2 * 2*16)                  =  23,360
    # stage 2: (16*32*9 + 32*32*9 + 2*64) + 4 * (2*32*32*9 + 2*64)  =  88,192
    # stage 3: (32*64*9 + 64*64*9 + 2*128) + 4 * (2*64*64*9 + 2*128) = 351,488
    # classifier: 64*10 + 10                                        =     650
    # total                                                         = 464,154
    assert sum(p.numel() for p in resnet32().parameters()) == 464_154


def test_resnet32_has_32_weight_layers():
    model = resnet32()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 32
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [5, 5, 5]


def test_option_a_shortcut_subsamples_and_zero_pads_channels_symmetrically():
    x = torch.randn(2, 16, 8, 8)
    out = PaddingShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 24:]) == 0
    with pytest.raises(ValueError, match="cannot shrink"):
        PaddingShortcut(32, 16, 1)


def test_depth_must_have_at_least_one_block_per_stage():
    with pytest.raises(ValueError, match="blocks_per_stage"):
        CifarResNet(0)


def test_a_block_changes_shape_by_padding_or_by_projection() -> None:
    x = torch.randn(2, 16, 8, 8)
    padded, projected = BasicBlock(16, 32, 2), BasicBlock(16, 32, 2, "projection")
    assert isinstance(padded.shortcut, PaddingShortcut)
    # Option B: a 1x1 conv-BN named shortcut.0 / shortcut.1, as the published CIFAR ResNet-18 stores it.
    assert {name for name, _ in projected.shortcut.named_parameters()} == {"0.weight", "1.weight", "1.bias"}
    assert padded(x).shape == projected(x).shape == (2, 32, 4, 4)
    assert isinstance(BasicBlock(16, 16, 1, "projection").shortcut, torch.nn.Identity)
    with pytest.raises(ValueError, match="shortcut must be 'padding' or 'projection', got 'conv'"):
        BasicBlock(16, 32, 2, "conv")
