"""Evaluation data a user brings: one file with ``images`` and ``labels`` (``--data FILE``).

The file is safetensors or NumPy ``.npz`` (read with ``allow_pickle=False``: nothing is unpickled).
``images`` are pixels in [0, 1], ``N x C x H x W`` or, where that reading is impossible and the last
axis has 1 or 3 channels, ``N x H x W x C`` (converted); ``labels`` are ``N`` integers. Anything else
is one line naming the problem: a missing key, a value outside [0, 1], a length mismatch.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from hmcam.data.dataset import ImageDataset
from hmcam.data.info import DatasetInfo

KEYS = ("images", "labels")
#: Channel counts recognized on the last axis of channels-last images.
CHANNELS_LAST = (1, 3)


def _read(path: Path) -> dict[str, Tensor]:
    if zipfile.is_zipfile(path):  # .npz is a zip of .npy files
        try:
            with np.load(path, allow_pickle=False) as archive:
                found = {key: archive[key] for key in KEYS if key in archive.files}
                names = list(archive.files)
        except ValueError as error:  # an object array, which would need pickle
            raise ValueError(f"--data {path}: cannot read without unpickling ({error})") from None
        for key in KEYS:
            if key not in found:
                raise ValueError(f"--data {path} has no {key!r} array (it has {names[:6]})")
        return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in found.items()}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            names = list(handle.keys())
            for key in KEYS:
                if key not in names:
                    raise ValueError(f"--data {path} has no {key!r} tensor (it has {names[:6]})")
            return {key: handle.get_tensor(key) for key in KEYS}
    except SafetensorError as error:
        raise ValueError(f"--data {path} is neither a safetensors nor an .npz file: {error}") from None


def _channels_first(images: Tensor, path: Path) -> Tensor:
    if images.dim() == 3:  # N x H x W: one channel
        return images[:, None]
    if images.dim() != 4:
        raise ValueError(f"--data {path}: images must be N x C x H x W, got shape {tuple(images.shape)}")
    first, last = int(images.shape[1]), int(images.shape[3])
    if first not in CHANNELS_LAST and last in CHANNELS_LAST:
        return images.permute(0, 3, 1, 2).contiguous()
    return images


def _labels(labels: Tensor, count: int, path: Path) -> Tensor:
    if labels.dim() != 1:
        raise ValueError(f"--data {path}: labels must be a vector of N integers, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"--data {path}: labels must be integers, got {labels.dtype}")
    if len(labels) != count:
        raise ValueError(f"--data {path}: {count} images but {len(labels)} labels")
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"--data {path}: labels must be >= 0, got {int(labels.min())}")
    return labels.to(torch.int64)


def load_user_data(
    path: str | os.PathLike[str], limit: int | None = None, num_classes: int | None = None
) -> ImageDataset:
    """The first ``limit`` examples of ``path`` as an :class:`ImageDataset` named after the file.

    ``num_classes`` defaults to the largest label + 1; the info's mean and std are the file's own
    per-channel statistics (they only describe the data: nothing normalizes with them unasked).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file")
    tensors = _read(path)
    images, labels = tensors["images"], tensors["labels"]
    if not images.dtype.is_floating_point:
        raise ValueError(f"--data {path}: images must be floats in [0, 1], got {images.dtype}")
    images = _channels_first(images, path).to(torch.float32)
    labels = _labels(labels, len(images), path)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if len(images) == 0:
        raise ValueError(f"--data {path} holds no images")
    if not bool(torch.isfinite(images).all()) or float(images.min()) < 0.0 or float(images.max()) > 1.0:
        raise ValueError(
            f"--data {path}: images must lie in [0, 1], got range [{float(images.min()):g}, {float(images.max()):g}]"
        )
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if int(labels.max()) >= classes:
        raise ValueError(f"--data {path}: label {int(labels.max())} is out of range for {classes} classes")
    channels = int(images.shape[1])
    per_channel = images.transpose(0, 1).reshape(channels, -1)
    info = DatasetInfo(
        name=path.name,
        input_shape=(channels, int(images.shape[2]), int(images.shape[3])),
        num_classes=max(classes, 1),
        class_names=tuple(str(index) for index in range(max(classes, 1))),
        mean=tuple(float(value) for value in per_channel.mean(dim=1)),
        std=tuple(max(float(value), 1e-6) for value in per_channel.std(dim=1, correction=0)),
    )
    return ImageDataset(images.contiguous(), labels, info)
