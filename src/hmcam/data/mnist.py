"""The MNIST file layout shared by MNIST and Fashion-MNIST: one IDX image file and one label file per split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hmcam.data.idx import idx_shape, read_idx

SPLIT_PREFIXES = {"train": "train", "test": "t10k"}


def split_filenames(split: str) -> tuple[str, str]:
    """The (images, labels) file names of ``split`` without the ``.gz`` suffix, e.g. ``t10k-images-idx3-ubyte``."""
    if split not in SPLIT_PREFIXES:
        raise ValueError(f"MNIST-style datasets have splits {sorted(SPLIT_PREFIXES)}, got {split!r}")
    prefix = SPLIT_PREFIXES[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def has_split(directory: Path, split: str) -> bool:
    """Whether ``directory`` holds both files of ``split``, gzipped or not."""
    return all(_find(directory, stem) is not None for stem in split_filenames(split))


def load_split(directory: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``split`` from ``directory``: uint8 images ``[N, 1, H, W]`` and uint8 labels ``[N]``.

    Both headers are checked before any pixel is read: the image file must be 3-D uint8, the label
    file 1-D uint8, and their counts equal; ``limit`` then reads only the first records of each.
    """
    paths = []
    for stem in split_filenames(split):
        path = _find(directory, stem)
        if path is None:
            raise FileNotFoundError(f"{directory / stem}[.gz] does not exist")
        paths.append(path)
    images_path, labels_path = paths
    image_shape, label_shape = idx_shape(images_path), idx_shape(labels_path)
    if len(image_shape) != 3:
        raise ValueError(f"{images_path} should hold [N, H, W] images, its header declares shape {image_shape}")
    if len(label_shape) != 1:
        raise ValueError(f"{labels_path} should hold [N] labels, its header declares shape {label_shape}")
    if image_shape[0] != label_shape[0]:
        raise ValueError(f"{images_path} holds {image_shape[0]} images but {labels_path} holds {label_shape[0]} labels")
    images, labels = read_idx(images_path, limit), read_idx(labels_path, limit)
    for path, array in ((images_path, images), (labels_path, labels)):
        if array.dtype != np.uint8:
            raise ValueError(f"{path} stores {array.dtype} values; MNIST-style files store uint8")
    return images[:, None, :, :], labels
