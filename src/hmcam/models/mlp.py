"""A fully connected ReLU network for MNIST-size inputs: the simplest model to attack and train."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

DEFAULT_HIDDEN = (256, 256)


class MLP(nn.Module):
    """Flatten a ``[B, in_channels, 28, 28]`` image and apply Linear-ReLU layers of ``hidden`` widths.

    The last layer is linear and gives the logits.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in hidden):
            raise ValueError(f"hidden widths must be positive integers, got {list(hidden)}")
        self.in_features = in_channels * image_size * image_size
        layers: list[nn.Module] = []
        width = self.in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for inputs ``x`` ``[B, ...]``, flattened after the batch axis."""
        flat = x.flatten(1)
        if flat.shape[1] != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} input values per example, got shape {tuple(x.shape)}")
        logits: Tensor = self.layers(flat)
        return logits


def mlp(num_classes: int = 10, in_channels: int = 1, *, hidden: Sequence[int] = DEFAULT_HIDDEN) -> MLP:
    """A ReLU MLP for 28x28 images with hidden widths ``hidden`` (default 256-256)."""
    return MLP(num_classes=num_classes, in_channels=in_channels, hidden=tuple(hidden))
