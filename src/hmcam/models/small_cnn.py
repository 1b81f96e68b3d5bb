"""The small ConvNet for MNIST-size inputs used by TRADES, YOPO and the paper's Table 7.

Four 3x3 convolutions without padding (32, 32, 64, 64 channels, ReLU, a 2x2 max-pool after the
second and the fourth) turn a 28x28 image into a 64x4x4 feature, followed by three fully connected
layers (200, 200, classes) with ReLU and dropout after the first. The paper trains it with CAT on
MNIST ("four convolutional layers followed by three fully connected layers, the same as [49]").
"""

from __future__ import annotations

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc(classes) for 28x28 inputs.

    Initialization follows TRADES: Kaiming-normal convolutions with zero bias, and an all-zero last
    layer, so the untrained network predicts the uniform distribution.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 4 * 4, 200),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(200, 200),
            nn.ReLU(),
            nn.Linear(200, num_classes),
        )
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
                assert module.bias is not None  # every convolution here has a bias
                nn.init.zeros_(module.bias)
        last = self.classifier[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        logits: Tensor = self.classifier(self.features(x).flatten(1))
        return logits


def smallcnn(num_classes: int = 10, in_channels: int = 1, *, dropout: float = 0.5) -> SmallCNN:
    """The TRADES/YOPO small ConvNet of the paper's MNIST experiment (Table 7)."""
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
