"""Datasets for the experiments: MNIST, Fashion-MNIST, CIFAR-10/100 and ImageNet as [0, 1] image tensors.

``load_dataset(name, split)`` finds the files (``root`` / ``--data-root``, ``$HMCAM_DATA``,
``~/.cache/hmcam``, system folders such as Debian's ``/usr/share/datasets``), downloads the official
ones with checksum verification when absent, and returns images with int64 labels and the
dataset's :class:`DatasetInfo` (shape, classes, normalization statistics).
"""

from hmcam.data.dataset import ImageDataset
from hmcam.data.download import DownloadError
from hmcam.data.imagenet import ImageFolder
from hmcam.data.info import DatasetInfo
from hmcam.data.locate import DatasetNotFoundError
from hmcam.data.registry import DATASETS, dataset_info, find_dataset, load_dataset

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DownloadError",
    "ImageDataset",
    "ImageFolder",
    "dataset_info",
    "find_dataset",
    "load_dataset",
]
