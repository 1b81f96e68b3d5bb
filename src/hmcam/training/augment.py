"""Training-set augmentation on batches of image tensors, deterministic under the seed and resume.

``"crop-flip"`` is the CIFAR standard of the adversarial-training literature (Madry et al., TRADES,
Free, YOPO): zero-pad each image by ``padding`` pixels, take a random crop of the original size and
flip it horizontally with probability 1/2. It runs on the batch as a tensor, on the training device,
after the examples are fetched.

The random offsets and flips of global batch ``b`` in epoch ``e`` come from a generator seeded with
``(seed, e, b)`` alone and are drawn for the whole global batch; each process takes the positions
of its own examples (process ``r`` of ``K`` holds positions ``r, r + K, ...``, as the trainer deals
them). So the augmented images depend neither on the number of processes nor on the history of any
random stream, and a resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

AUGMENTATIONS = ("none", "crop-flip")


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, batch)`` through NumPy's SeedSequence."""
    state = np.random.SeedSequence([seed, epoch, batch, 0x617567]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def crop_flip(images: Tensor, padding: int, offsets: Tensor, flips: Tensor) -> Tensor:
    """``images`` ``[B, C, H, W]`` zero-padded by ``padding``, cropped and flipped where ``flips`` is true.

    ``offsets`` ``[B, 2]`` are the crops' top rows and left columns in the padded image, in
    ``[0, 2 * padding]``; an offset of ``padding`` in both keeps the original image.
    """
    count, _, height, width = images.shape
    if padding:
        padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    else:
        padded = images
    offsets = offsets.to(images.device)
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # [B, H]
    columns = offsets[:, 1, None] + torch.arange(width, device=images.device)  # [B, W]
    batch = torch.arange(count, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    cropped = padded[batch, channel, rows[:, None, :, None], columns[:, None, None, :]]
    flip = flips.to(images.device)[:, None, None, None]
    return torch.where(flip, cropped.flip(-1), cropped)


@dataclass(frozen=True)
class Augmentation:
    """The augmentation ``kind`` (one of :data:`AUGMENTATIONS`) with its ``padding``, seeded by ``seed``."""

    kind: str = "none"
    padding: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.kind!r}; choose one of {AUGMENTATIONS}")
        if self.padding < 0:
            raise ValueError(f"augmentation padding must be >= 0, got {self.padding}")

    def __call__(self, images: Tensor, epoch: int, batch: int, rank: int = 0, world_size: int = 1) -> Tensor:
        """The share ``images`` of process ``rank`` in global batch ``batch`` of ``epoch``, augmented."""
        if self.kind == "none":
            return images
        count = images.shape[0] * world_size
        generator = batch_generator(self.seed, epoch, batch)
        offsets = torch.randint(0, 2 * self.padding + 1, (count, 2), generator=generator)
        flips = torch.rand(count, generator=generator) < 0.5
        mine = slice(rank, count, world_size)
        return crop_flip(images, self.padding, offsets[mine], flips[mine])
