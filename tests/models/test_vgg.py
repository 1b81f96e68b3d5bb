"""Tests for VGG-16 without batch norm for CIFAR-size inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hmcam.models.vgg import vgg16


def test_vgg16_has_exactly_15245130_parameters():
    # 13 convolutions (3x3, with bias) of configuration D:
    #   3->64: 1,792   64->64: 36,928   64->128: 73,856   128->128: 147,584
    #   128->256: 295,168   2 x 256->256: 1,180,160   256->512: 1,180,160   5 x 512->512: 11,799,040
    #   sum = 14,714,688 (the familiar VGG-16 feature extractor)
    # classifier: 2 x (512*512 + 512) + (512*10 + 10) = 525,312 + 5,130 = 530,442
    # total = 15,245,130
    assert sum(p.numel() for p in vgg16().parameters()) == 15_245_130


def test_vgg16_has_13_convolutions_3_linear_layers_and_no_batch_norm():
    model = vgg16()
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


def test_convolutions_start_he_normal_with_zero_bias():
    torch.manual_seed(0)
    model = vgg16()
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    expected = math.sqrt(2.0 / (3 * 3 * 512))
    assert last.weight.std().item() == pytest.approx(expected, rel=0.02)
    assert torch.count_nonzero(last.bias) == 0


def test_dropout_only_acts_in_train_mode():
    torch.manual_seed(0)
    model = vgg16(dropout=0.5)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="dropout"):
        vgg16(dropout=-0.1)
