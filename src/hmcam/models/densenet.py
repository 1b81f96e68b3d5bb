"""DenseNet-121 for CIFAR-size inputs (Huang et al. 2017), the paper's "DenseNet121".

This is the CIFAR adaptation in common use for CIFAR-10 attack benchmarks (the kuangliu/pytorch-cifar
layout): a 3x3 stem with 2k channels, four dense blocks of 6, 12, 24 and 16 bottleneck layers with
growth rate k = 32, transitions that halve the channels (compression 0.5) and the resolution, a final
BN-ReLU, global average pooling and a linear classifier. Each bottleneck is BN-ReLU-1x1 conv (4k)
then BN-ReLU-3x3 conv (k), and its output is concatenated in front of its input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DenseBottleneck(nn.Module):
    """BN-ReLU-1x1 conv to 4k channels, BN-ReLU-3x3 conv to k channels, then ``cat([new, input])``."""

    def __init__(self, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """The block applied to feature maps ``x`` ``[B, C, H, W]``."""
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], dim=1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv that compresses the channels, then a 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Compressed, half-resolution feature maps of ``x``."""
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class CifarDenseNet(nn.Module):
    """DenseNet-BC for CIFAR with the given block sizes, growth rate and compression ``reduction``."""

    def __init__(
        self,
        blocks: Sequence[int],
        growth_rate: int,
        reduction: float = 0.5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(blocks) == 0 or any(b < 1 for b in blocks):
            raise ValueError(f"blocks must be a non-empty list of positive layer counts, got {list(blocks)}")
        if not 0.0 < reduction <= 1.0:
            raise ValueError(f"reduction must be in (0, 1], got {reduction}")
        channels = 2 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for index, layers in enumerate(blocks):
            dense = []
            for _ in range(layers):
                dense.append(DenseBottleneck(channels, growth_rate))
                channels += growth_rate
            stages.append(nn.Sequential(*dense))
            if index < len(blocks) - 1:
                compressed = int(math.floor(channels * reduction))
                stages.append(Transition(channels, compressed))
                channels = compressed
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        out = self.features(self.conv1(x))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        logits: Tensor = self.linear(out)
        return logits


def densenet121(num_classes: int = 10, in_channels: int = 3) -> CifarDenseNet:
    """CIFAR DenseNet-121 (blocks 6-12-24-16, growth 32): the paper's "DenseNet121"."""
    return CifarDenseNet((6, 12, 24, 16), growth_rate=32, num_classes=num_classes, in_channels=in_channels)
