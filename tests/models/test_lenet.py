"""Tests for the LeNet-5 style ConvNet."""

from __future__ import annotations

import torch

from hmcam.models.lenet import lenet


def test_lenet_has_exactly_61706_parameters():
    # conv 1->6 (5x5): 150 + 6 = 156        conv 6->16 (5x5): 2,400 + 16 = 2,416
    # 28 (padded 2) -> 28 -> pool 14 -> 10 -> pool 5, so fc1 takes 16*5*5 = 400 inputs:
    # fc 400->120: 48,120   fc 120->84: 10,164   fc 84->10: 850
    # total = 61,706 (LeCun et al. report about 60,000 for the original with sparse C3)
    assert sum(p.numel() for p in lenet().parameters()) == 61_706


def test_three_channel_input_changes_only_the_first_convolution():
    assert sum(p.numel() for p in lenet(in_channels=3).parameters()) == 61_706 + 2 * 150
    with torch.no_grad():
        assert lenet(num_classes=4, in_channels=3)(torch.rand(2, 3, 28, 28)).shape == (2, 4)
