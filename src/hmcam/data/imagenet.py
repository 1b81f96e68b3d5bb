"""ImageNet from a class-per-folder tree, decoded lazily with Pillow.

ImageNet is too large to hold as one float tensor (the validation split alone would be 30 GB), so
:class:`ImageFolder` keeps file paths and decodes on indexing: RGB conversion, resize of the shorter
side to 256 and a 224 center crop by default, the evaluation transform of the ResNet family (the
rounding matches torchvision's ``Resize``/``CenterCrop``, so accuracies are comparable). Class folders
are sorted by name and numbered from 0, which for the 1000 WordNet ids gives the standard indices.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from hmcam.data.info import DatasetInfo

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val")


def class_folders(directory: Path) -> list[str]:
    """The sorted names of the sub-folders of ``directory`` (hidden ones skipped); each is a class."""
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith("."))


def has_split(directory: Path, split: str) -> bool:
    """Whether ``directory/split`` exists and holds at least one class folder."""
    if split not in SPLITS:
        raise ValueError(f"ImageNet has splits {list(SPLITS)}, got {split!r}")
    split_dir = directory / split
    return split_dir.is_dir() and bool(class_folders(split_dir))


def resize_and_center_crop(image: Image.Image, resize: int, crop: int) -> Image.Image:
    """Resize so the shorter side is ``resize`` (bilinear, aspect kept), then take the central ``crop`` square.

    Sizes round as torchvision does: the longer side is truncated, the crop offset rounded.
    """
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    new_size = (new_short, new_long) if width <= height else (new_long, new_short)
    image = image.resize(new_size, Image.Resampling.BILINEAR)
    left = int(round((new_size[0] - crop) / 2.0))
    top = int(round((new_size[1] - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


class ImageFolder(Dataset[tuple[Tensor, Tensor]]):
    """Lazily decoded ``root/<class>/<image>`` tree yielding ``(float32 [3, crop, crop] in [0, 1], int64 label)``.

    ``labels`` (int64 ``[N]``), ``samples`` (paths) and ``info`` are available at once; there is no
    ``images`` tensor, since decoding everything up front is what this class avoids: index the
    dataset or wrap it in a DataLoader. Files are ordered by class, then by name, so ``limit=n``
    keeps the first ``n`` of that order.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        info: DatasetInfo,
        resize: int = 256,
        crop: int = 224,
        limit: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if crop > resize:
            raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
        classes = class_folders(self.root)
        if not classes:
            raise ValueError(f"{self.root} has no class sub-folders; expected {self.root}/<class>/<image>")
        samples: list[Path] = []
        labels: list[int] = []
        for index, name in enumerate(classes):
            files = sorted(
                entry.name
                for entry in os.scandir(self.root / name)
                if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
            )
            samples.extend(self.root / name / file for file in files)
            labels.extend([index] * len(files))
        if not samples:
            raise ValueError(f"{self.root} has class folders but no image files ({', '.join(IMAGE_EXTENSIONS)})")
        if limit is not None:
            samples, labels = samples[:limit], labels[:limit]
        self.samples = samples
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.resize, self.crop = resize, crop
        self.info = DatasetInfo(
            name=info.name,
            input_shape=(3, crop, crop),
            num_classes=len(classes),
            class_names=tuple(classes),
            mean=info.mean,
            std=info.std,
        )

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Tensor:
        """Decode sample ``index`` into a float32 ``[3, crop, crop]`` tensor in [0, 1]."""
        path = self.samples[index]
        try:
            with Image.open(path) as opened:
                image = resize_and_center_crop(opened.convert("RGB"), self.resize, self.crop)
        except OSError as error:
            raise ValueError(f"cannot decode image {path}: {error}") from error
        pixels = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32)).div_(255.0)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.load_image(index), self.labels[index]

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, n={len(self)}, classes={self.info.num_classes})"
