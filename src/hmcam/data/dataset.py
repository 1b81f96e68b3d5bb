"""An in-memory labelled image dataset: float32 pixels in [0, 1] and int64 labels."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from hmcam.data.info import DatasetInfo


class ImageDataset(TensorDataset):
    """A :class:`~torch.utils.data.TensorDataset` of ``(image, label)`` pairs with its :class:`DatasetInfo`.

    ``images`` is float32 ``[N, C, H, W]`` in [0, 1] and ``labels`` int64 ``[N]``; indexing returns
    ``(images[i], labels[i])``, so it plugs straight into a :class:`~torch.utils.data.DataLoader`.
    """

    def __init__(self, images: Tensor, labels: Tensor, info: DatasetInfo) -> None:
        if images.dtype != torch.float32:
            raise TypeError(f"images must be float32, got {images.dtype}")
        if labels.dtype != torch.int64:
            raise TypeError(f"labels must be int64, got {labels.dtype}")
        if images.dim() != 4 or tuple(images.shape[1:]) != tuple(info.input_shape):
            raise ValueError(
                f"{info.name}: images must have shape [N, {', '.join(map(str, info.input_shape))}], "
                f"got {tuple(images.shape)}"
            )
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{info.name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
            raise ValueError(
                f"{info.name}: labels must lie in [0, {info.num_classes - 1}], "
                f"got range [{int(labels.min())}, {int(labels.max())}]"
            )
        super().__init__(images, labels)
        self.images = images
        self.labels = labels
        self.info = info

    @classmethod
    def from_uint8(cls, pixels: np.ndarray, labels: np.ndarray, info: DatasetInfo) -> ImageDataset:
        """Build from uint8 pixels ``[N, C, H, W]`` (scaled by 1/255) and integer labels ``[N]``."""
        if pixels.dtype != np.uint8:
            raise TypeError(f"{info.name}: pixels must be uint8, got {pixels.dtype}")
        if len(pixels) != len(labels):
            raise ValueError(f"{info.name}: {len(pixels)} images but {len(labels)} labels")
        # astype copies, so the tensors never alias read-only buffers from np.frombuffer
        images = torch.from_numpy(pixels.astype(np.float32)).div_(255.0)
        return cls(images, torch.from_numpy(np.array(labels, dtype=np.int64)), info)

    def __repr__(self) -> str:
        return f"ImageDataset({self.info.name!r}, n={len(self)}, shape={tuple(self.images.shape[1:])})"
