"""Tests for ResNeXt-29 (8x64d) for CIFAR-size inputs (Xie et al. 2017)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmcam.models.resnext import CifarResNeXt, resnext29_8x64d


def test_resnext29_8x64d_has_exactly_34426698_parameters():
    # Convolutions have no bias; BN has 2 per channel; D is the grouped width, groups = 8.
    # stem: 3*64*9 + 128                                                             =      1,856
    # stage 1 (D=512, out 256): grouped conv 512*(512/8)*9 = 294,912
    #   first: 64*512 + 1024 + 294,912 + 1024 + 512*256 + 512 + (64*256 + 512)        =    478,208
    #   two more: 2 * (256*512 + 1024 + 294,912 + 1024 + 512*256 + 512)             =  1,119,232
    # stage 2 (D=1024, out 512): grouped conv 1024*128*9 = 1,179,648
    #   first: 256*1024 + 2048 + 1,179,648 + 2048 + 1024*512 + 1024 + (256*512 + 1024) = 2,103,296
    #   two more: 2 * (512*1024 + 2048 + 1,179,648 + 2048 + 1024*512 + 1024)        =  4,466,688
    # stage 3 (D=2048, out 1024): grouped conv 2048*256*9 = 4,718,592
    #   first: 512*2048 + 4096 + 4,718,592 + 4096 + 2048*1024 + 2048 + (512*1024 + 2048) = 8,400,896
    #   two more: 2 * (1024*2048 + 4096 + 4,718,592 + 4096 + 2048*1024 + 2048)       = 17,846,272
    # classifier: 1024*10 + 10                                                        =     10,250
    # total = 34,426,698 (Xie et al. Table 7: 34.4M)
    with torch.device("meta"):
        model = resnext29_8x64d()
    assert sum(p.numel() for p in model.parameters()) == 34_426_698


def test_grouped_convolutions_have_cardinality_8_and_widths_512_1024_2048():
    with torch.device("meta"):
        model = resnext29_8x64d()
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(grouped) == 9
    assert {m.groups for m in grouped} == {8}
    assert [m.in_channels for m in grouped[::3]] == [512, 1024, 2048]


def test_one_tiny_forward_pass():
    # 16x16 instead of 32x32 keeps this under a GFLOP; global average pooling makes the classifier
    # input independent of the spatial size, so the shapes checked are those of a CIFAR pass.
    torch.manual_seed(0)
    model = resnext29_8x64d(num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 16, 16)).shape == (1, 10)


def test_invalid_cardinality_is_rejected():
    with pytest.raises(ValueError, match="cardinality"):
        CifarResNeXt(0, 64)
