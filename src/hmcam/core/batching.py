"""Reading labelled data in batches: one gather for in-memory tensors, prefetching workers for folders.

:func:`iterate_batches` is how training and evaluation read data: in-memory datasets (MNIST,
CIFAR) by one gather per batch, folder datasets (ImageNet, whose images are decoded one by one, some
26 ms each) through a DataLoader whose worker processes decode and prefetch the next batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate


class LabelledDataset(Protocol):
    """What training and evaluation read: a sized dataset of ``(image, label)`` tensor pairs.

    :class:`~hmcam.data.ImageDataset`, :class:`~hmcam.data.ImageFolder` and a two-tensor
    :class:`~torch.utils.data.TensorDataset` all qualify.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> tuple[Tensor, ...]: ...


def fetch(dataset: LabelledDataset, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
    """Images and labels of ``dataset`` at ``indices``: one gather for in-memory tensors, else item by item."""
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if isinstance(images, Tensor) and isinstance(labels, Tensor):
        index = torch.as_tensor(indices, dtype=torch.int64)
        return images[index], labels[index]
    images, labels = default_collate([dataset[int(i)] for i in indices])
    return images, labels


def in_memory(dataset: LabelledDataset) -> bool:
    """Whether ``dataset`` holds its examples as ``images`` and ``labels`` tensors (read by indexing them)."""
    return isinstance(getattr(dataset, "images", None), Tensor) and isinstance(getattr(dataset, "labels", None), Tensor)


def iterate_batches(
    dataset: LabelledDataset,
    batches: Sequence[Sequence[int]],
    *,
    workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The ``(images, labels)`` of each list of indices in ``batches``, in order, on the CPU.

    An in-memory dataset is indexed directly. Any other goes through a DataLoader with ``workers``
    processes (0: decode in this process), each prefetching two batches, and pinned memory when
    ``pin_memory``; its worker seeds come from a generator seeded with ``seed``, so reading never
    draws from the global random stream that training checkpoints.
    """
    if in_memory(dataset):
        for indices in batches:
            yield fetch(dataset, indices)
        return
    loader: DataLoader[Any] = DataLoader(
        cast(Dataset[Any], dataset),
        batch_sampler=[list(indices) for indices in batches],
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )
    yield from loader
