"""Pre-activation ResNet-18 for CIFAR-size inputs (He et al. 2016, "Identity Mappings").

The paper's adversarial-training experiments (Table 4) follow YOPO and Free, which use this network:
a 3x3 stem with 64 channels, four stages of two pre-activation basic blocks (64, 128, 256, 512
channels; the last three halve the resolution), global average pooling and a linear classifier.
A pre-activation block computes BN-ReLU first and feeds the activated tensor to both the residual
branch and, when the shape changes, the 1x1 projection shortcut. As in YOPO's code, there is no
extra BN-ReLU after the last block.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """The block applied to feature maps ``x`` ``[B, C, H, W]``."""
        out = F.relu(self.bn1(x))
        shortcut: Tensor = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        result: Tensor = out + shortcut
        return result


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 (2-2-2-2 blocks, 64-128-256-512 channels), default PyTorch init."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        stages = []
        channels = 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(PreActBlock(channels, width, stride), PreActBlock(width, width, 1)))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits: Tensor = self.linear(out)
        return logits


def preact_resnet18(num_classes: int = 10, in_channels: int = 3) -> PreActResNet18:
    """Pre-activation ResNet-18: the paper's "Preact-ResNet18" for CIFAR-10 adversarial training."""
    return PreActResNet18(num_classes=num_classes, in_channels=in_channels)
