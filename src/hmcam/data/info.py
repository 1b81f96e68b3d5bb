"""What a model needs to know about a dataset: input shape, classes and normalization statistics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of an image-classification dataset.

    ``input_shape`` is (C, H, W) of one example as the loader returns it, pixels in [0, 1].
    ``mean`` and ``std`` are per-channel statistics of the training split in that [0, 1] scale, the
    values to give :class:`hmcam.models.wrappers.Normalize` so attacks stay in pixel space.
    ``class_names[i]`` names label ``i``; it is empty only where the names come from the files at load
    time (ImageNet's WordNet folder names).
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3 or any(d < 1 for d in self.input_shape):
            raise ValueError(f"{self.name}: input_shape must be (C, H, W) with positive sizes, got {self.input_shape}")
        channels = self.input_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"{self.name}: mean and std need {channels} values (one per channel), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be positive, got {self.std}")
        if self.num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be >= 1, got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"{self.name}: class names are not unique")
