"""Tests for the CIFAR DenseNet-121 (growth 32, blocks 6-12-24-16, compression 0.5)."""

from __future__ import annotations

import pytest
import torch

from hmcam.models.densenet import CifarDenseNet, DenseBottleneck, densenet121


def test_densenet121_has_exactly_6956298_parameters():
    # A bottleneck on c input channels: BN 2c + 1x1 conv c*128 + BN 256 + 3x3 conv 128*32*9
    #   = 130c + 37,120. Block inputs grow by 32 per layer.
    # stem 3*64*9                                                   =     1,728
    # block 1: c = 64..224   (6 layers):  130 * 864   + 6 * 37,120   =   335,040
    # transition 256->128: BN 512 + 256*128                          =    33,280
    # block 2: c = 128..480  (12 layers): 130 * 3,648 + 12 * 37,120  =   919,680
    # transition 512->256: 1,024 + 512*256                           =   132,096
    # block 3: c = 256..992  (24 layers): 130 * 14,976 + 24 * 37,120 = 2,837,760
    # transition 1024->512: 2,048 + 1024*512                         =   526,336
    # block 4: c = 512..992  (16 layers): 130 * 12,032 + 16 * 37,120 = 2,158,080
    # final BN 1024: 2,048; classifier 1024*10 + 10: 10,250
    # total                                                          = 6,956,298
    assert sum(p.numel() for p in densenet121().parameters()) == 6_956_298


def test_bottleneck_puts_new_features_in_front_of_its_unchanged_input():
    torch.manual_seed(0)
    layer = DenseBottleneck(40, 32).eval()
    x = torch.randn(2, 40, 8, 8)
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (2, 72, 8, 8)
    assert torch.equal(out[:, 32:], x)


def test_feature_width_before_the_classifier_is_1024():
    model = densenet121()
    assert model.bn.num_features == 1024 and model.linear.in_features == 1024


def test_invalid_configuration_is_rejected():
    with pytest.raises(ValueError, match="blocks"):
        CifarDenseNet([], 32)
    with pytest.raises(ValueError, match="reduction"):
        CifarDenseNet([2, 2], 12, reduction=0.0)
