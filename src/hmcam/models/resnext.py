"""ResNeXt-29 for CIFAR-size inputs (Xie et al. 2017, section 5.2), the paper's "ResNeXt29-8-64".

The CIFAR ResNeXt is a 3x3 stem with 64 channels followed by three stages of three bottleneck
blocks (depth 3 * 3 * 3 + 2 = 29) with 256, 512 and 1024 output channels. Each bottleneck reduces
to ``cardinality * base_width * stage_scale`` channels with a 1x1 conv, applies a 3x3 grouped
convolution with ``cardinality`` groups, and expands back with a 1x1 conv; projection shortcuts
(1x1 conv + BN) are used where the shape changes. With cardinality 8 and base width 64 this is the
8x64d model of the paper's Table 7 (34.4M parameters).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ResNeXtBottleneck(nn.Module):
    """1x1 reduce -> 3x3 grouped conv (``cardinality`` groups) -> 1x1 expand, each with BN."""

    def __init__(self, in_channels: int, out_channels: int, width: int, cardinality: int, stride: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_grouped = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn_grouped = nn.BatchNorm2d(width)
        self.conv_expand = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """The block applied to feature maps ``x`` ``[B, C, H, W]``."""
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn_grouped(self.conv_grouped(out)))
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(out + self.shortcut(x))


class CifarResNeXt(nn.Module):
    """ResNeXt-29 with the given ``cardinality`` and bottleneck ``base_width`` (Xie et al., CIFAR).

    Initialization follows the authors' CIFAR code: Kaiming-normal convolutions and classifier
    weights, BN scale 1 and shift 0, zero classifier bias.
    """

    def __init__(
        self,
        cardinality: int,
        base_width: int,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if cardinality < 1 or base_width < 1:
            raise ValueError(f"cardinality and base_width must be positive, got {cardinality}, {base_width}")
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages = []
        channels = 64
        # Stage s has 256 * 2**s outputs and a bottleneck 2**s times the base width per group.
        for scale, stride in ((1, 1), (2, 2), (4, 2)):
            out_channels = 256 * scale
            width = cardinality * base_width * scale
            blocks = []
            for index in range(3):
                blocks.append(
                    ResNeXtBottleneck(channels, out_channels, width, cardinality, stride if index == 0 else 1)
                )
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.kaiming_normal_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stage3(self.stage2(self.stage1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits: Tensor = self.classifier(out)
        return logits


def resnext29_8x64d(num_classes: int = 10, in_channels: int = 3) -> CifarResNeXt:
    """ResNeXt-29 (8x64d): the paper's "ResNeXt29-8-64" model for CIFAR-10 attacks."""
    return CifarResNeXt(8, 64, num_classes=num_classes, in_channels=in_channels)
