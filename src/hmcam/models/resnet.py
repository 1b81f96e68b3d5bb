"""ResNet-32 for CIFAR-size inputs (He et al. 2016, section 4.2), one of the paper's attacked models.

The network is the 6n+2 CIFAR ResNet with n = 5: a 3x3 stem with 16 channels, three stages of five
basic blocks with 16, 32 and 64 channels (the last two halve the resolution), global average pooling
and a linear classifier. Shortcuts that change shape use He et al.'s option A (stride-2 subsampling
plus zero-padded channels), which adds no parameters; this is the variant behind the published
0.46M figure and the widely used public CIFAR ResNet-32 checkpoints.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PaddingShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"an option-A shortcut cannot shrink channels ({in_channels} -> {out_channels})")
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        """``x`` subsampled by ``stride`` and zero-padded to the output channels."""
        x = x[:, :, :: self.stride, :: self.stride]
        # Pad the added channels symmetrically, as the reference CIFAR implementation does, so that
        # published weights line up channel for channel.
        front = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, front, self.extra - front))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut, or one that changes shape, and a ReLU after the sum.

    ``shortcut`` is the kind that changes shape: ``"padding"`` (He et al.'s option A,
    :class:`PaddingShortcut`, no parameters) or ``"projection"`` (option B: a 1x1 conv-BN, as in
    kuangliu's CIFAR ResNet-18 and :class:`hmcam.models.published.ResNet18`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str = "padding") -> None:
        super().__init__()
        if shortcut not in ("padding", "projection"):
            raise ValueError(f"shortcut must be 'padding' or 'projection', got {shortcut!r}")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if (stride != 1 or in_channels != out_channels) and shortcut == "padding":
            self.shortcut = PaddingShortcut(in_channels, out_channels, stride)
        elif stride != 1 or in_channels != out_channels:
            # A Sequential, so that its tensors are named shortcut.0 / shortcut.1 as in the published layout.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        """The block applied to feature maps ``x`` ``[B, C, H, W]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth 6n+2 (n basic blocks per stage, 16/32/64 channels).

    Weights use Kaiming-normal initialization for convolutions and the classifier, as in the
    reference implementation. Global average pooling makes the network accept any input of at
    least 8x8 pixels; on 32x32 inputs it is exactly the 8x8 average pool of the original.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be at least 1, got {blocks_per_stage}")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        channels = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, width, stride if index == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits: Tensor = self.linear(out)
        return logits


def resnet32(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (n = 5): the paper's "ResNet32" source and target model for CIFAR-10 attacks."""
    return CifarResNet(5, num_classes=num_classes, in_channels=in_channels)
