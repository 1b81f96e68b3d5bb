"""VGG-16 without batch normalization for CIFAR-size inputs (Simonyan & Zisserman 2015).

The paper attacks "VGG16 (without BN)". The network keeps all 16 weight layers of configuration D:
thirteen 3x3 convolutions with ReLU in five groups (64, 128, 256, 512, 512 channels), each group
closed by a 2x2 max-pool, so a 32x32 input leaves a 512x1x1 feature, followed by the three
fully connected layers scaled to that feature as in the common CIFAR port (512-512-classes with
dropout before the first two). Inputs must be at least 32x32.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

# Configuration D of Simonyan & Zisserman: channel counts, "M" for a 2x2 max-pool.
VGG16_LAYERS: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class VGG16(nn.Module):
    """VGG-16 (configuration D, no batch norm) with a 512-512-classes classifier.

    Without batch norm the network only trains from a careful start, so convolutions use
    He-normal weights N(0, 2 / (k * k * out_channels)) and zero biases, the initialization of the
    widely used CIFAR port of this network.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(512, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                assert module.bias is not None  # every convolution here has a bias
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        logits: Tensor = self.classifier(self.features(x).flatten(1))
        return logits


def vgg16(num_classes: int = 10, in_channels: int = 3, *, dropout: float = 0.5) -> VGG16:
    """VGG-16 without BN: the paper's "VGG16" model for CIFAR-10 attacks."""
    return VGG16(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
