"""Wide ResNet-34-10 for CIFAR-size inputs (Zagoruyko & Komodakis 2016), the paper's "Wide ResNet34".

WRN-d-k has (d - 4) / 6 pre-activation basic blocks per stage and 16k, 32k, 64k channels in its three
stages after a 16-channel 3x3 stem; depth 34 and widening factor 10 is the network of Madry et al.,
TRADES and YOPO, which the paper's Table 5 follows. The first block of each stage projects its
*activated* input with a 1x1 convolution (the layout of the public PyTorch port these works share),
and a final BN-ReLU precedes global average pooling and the linear classifier.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class WideBasicBlock(nn.Module):
    """Pre-activation block BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 with optional 1x1 projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """The block applied to feature maps ``x`` ``[B, C, H, W]``."""
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        shortcut: Tensor = x if self.shortcut is None else self.shortcut(activated)
        result: Tensor = out + shortcut
        return result


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for CIFAR with the initialization of the shared PyTorch port.

    Convolutions are drawn from N(0, 2 / (k * k * out_channels)), BN starts at scale 1 and shift 0
    and the classifier bias at 0.
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"Wide ResNet depth must be 6n + 4 with n >= 1, got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be positive, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        blocks_per_stage = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages = []
        channels = 16
        for width, stride in ((16 * widen_factor, 1), (32 * widen_factor, 2), (64 * widen_factor, 2)):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(WideBasicBlock(channels, width, stride if index == 0 else 1, dropout))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        logits: Tensor = self.fc(out)
        return logits


def wrn34_10(num_classes: int = 10, in_channels: int = 3, *, dropout: float = 0.0) -> WideResNet:
    """WRN-34-10: the paper's "Wide ResNet34" for CIFAR-10 adversarial training (Table 5)."""
    return WideResNet(34, 10, num_classes=num_classes, in_channels=in_channels, dropout=dropout)
