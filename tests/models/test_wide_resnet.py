"""Tests for Wide ResNet-34-10 (Zagoruyko & Komodakis; the Madry/TRADES/YOPO network)."""

from __future__ import annotations

import pytest
import torch

from hmcam.models.wide_resnet import WideBasicBlock, WideResNet, wrn34_10


def test_wrn34_10_has_exactly_46160474_parameters():
    # (34 - 4) / 6 = 5 blocks per stage, widths 160, 320, 640; convolutions have no bias.
    # stem 3*16*9                                                               =        432
    # stage 1: (32 + 16*160*9 + 320 + 160*160*9 + 16*160)
    #          + 4 * (320 + 160*160*9 + 320 + 160*160*9)                        =  2,102,112
    # stage 2: (320 + 160*320*9 + 640 + 320*320*9 + 160*320)
    #          + 4 * (640 + 2 * 320*320*9 + 640)                                =  8,812,480
    # stage 3: (640 + 320*640*9 + 1280 + 640*640*9 + 320*640)
    #          + 4 * (1280 + 2 * 640*640*9 + 1280)                              = 35,237,760
    # final BN 640: 1,280; classifier 640*10 + 10: 6,410
    # total                                                                     = 46,160,474
    with torch.device("meta"):
        model = wrn34_10()
    assert sum(p.numel() for p in model.parameters()) == 46_160_474


def test_one_tiny_forward_pass():
    # 16x16 instead of 32x32 keeps this under a GFLOP; global average pooling makes the classifier
    # input independent of the spatial size, so the shapes checked are those of a CIFAR pass.
    torch.manual_seed(0)
    model = wrn34_10(num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 16, 16)).shape == (1, 10)


def test_projection_shortcut_takes_the_activated_input():
    """The shortcut of a projection block sees relu(bn1(x)), the layout of the shared PyTorch port."""
    torch.manual_seed(0)
    block = WideBasicBlock(4, 8, 1, 0.0).eval()
    with torch.no_grad():
        block.conv2.weight.zero_()
        x = torch.randn(2, 4, 6, 6)
        expected = block.shortcut(torch.relu(block.bn1(x)))
        assert torch.equal(block(x), expected)
        assert not torch.allclose(block(x), block.shortcut(x))


def test_dropout_option_is_active_in_train_mode_only():
    torch.manual_seed(0)
    model = WideResNet(10, 1, dropout=0.3)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize(("depth", "widen", "dropout"), [(33, 10, 0.0), (4, 1, 0.0), (34, 0, 0.0), (34, 10, 1.0)])
def test_invalid_configuration_is_rejected(depth, widen, dropout):
    with pytest.raises(ValueError):
        WideResNet(depth, widen, dropout=dropout)
