"""A LeNet-5 style ConvNet for MNIST-size inputs (LeCun et al. 1998), with ReLU and max-pooling.

The layout is LeNet-5's: a 5x5 convolution to 6 maps (padded, so a 28x28 input plays the role of the
original 32x32 one), 2x2 pooling, a 5x5 convolution to 16 maps, 2x2 pooling, and fully connected
layers of 120, 84 and ``num_classes`` units. Modern ReLU, max-pooling, full C3 connectivity and a
linear output replace the original tanh units, trainable subsampling, partial connections and RBF
output layer.
"""

from __future__ import annotations

from torch import Tensor, nn


class LeNet5(nn.Module):
    """conv6(5x5)-pool-conv16(5x5)-pool-fc120-fc84-fc(classes) with ReLU, for 28x28 inputs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for a batch of images ``x`` ``[B, C, H, W]``."""
        logits: Tensor = self.classifier(self.features(x).flatten(1))
        return logits


def lenet(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    """LeNet-5 style ConvNet for 28x28 images."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels)
