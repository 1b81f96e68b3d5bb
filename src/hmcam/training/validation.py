"""The per-epoch check of a model in training: clean and PGD accuracy on fixed test examples.

The robust subset is always the first ``n`` examples of the test split and the PGD random start uses
a fixed seed, so numbers from different epochs and runs are comparable. With several processes
each evaluates every ``world_size``-th example and the counts are summed. Evaluation runs inside
``torch.random.fork_rng``: it never moves the training's random streams, so adding or changing it
cannot change the trained weights.

:func:`iterate_batches` is how training and evaluation read data: in-memory datasets (MNIST,
CIFAR) by one gather per batch, folder datasets (ImageNet, whose images are decoded one by one, some
26 ms each) through a DataLoader whose worker processes decode and prefetch the next batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate

from hmcam.attacks import PGD
from hmcam.training.distributed import DistributedContext, all_reduce_sum


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


def _count_correct(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    with torch.no_grad():
        logits: Tensor = model(images)
        return (logits.argmax(dim=1) == labels).sum()


def accuracies(
    model: nn.Module,
    dataset: LabelledDataset,
    *,
    robust_examples: int,
    eps: float | None,
    alpha: float | None,
    steps: int,
    seed: int,
    batch_size: int,
    context: DistributedContext,
    workers: int = 0,
) -> tuple[float, float | None]:
    """Clean accuracy on all of ``dataset`` and PGD accuracy on its first ``robust_examples``.

    PGD is L-inf with radius ``eps``, ``steps`` steps of ``alpha`` (None: 2.5 * eps / steps) from a
    random start seeded with ``seed``. Returns ``(clean, robust)``, robust None when
    ``robust_examples`` is 0. ``model`` must not be a DistributedDataParallel wrapper. A folder
    dataset is decoded by ``workers`` DataLoader processes (:func:`iterate_batches`).
    """
    was_training = model.training
    model.eval()
    device = context.device
    total = len(dataset)
    robust_total = min(robust_examples, total)
    counts = torch.zeros(2, dtype=torch.int64, device=device)
    attack = None
    if robust_total > 0:
        if eps is None:
            raise ValueError("robust evaluation needs eps, the radius of the L-inf ball; or set robust_examples=0")
        attack = PGD(model, eps=eps, alpha=alpha, steps=steps, seed=seed)
    mine = range(context.rank, total, context.world_size)
    batches = [list(mine[start : start + batch_size]) for start in range(0, len(mine), batch_size)]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            read = iterate_batches(dataset, batches, workers=workers, pin_memory=device.type == "cuda", seed=seed)
            for indices, (images, labels) in zip(batches, read, strict=True):
                images, labels = images.to(device), labels.to(device)
                counts[0] += _count_correct(model, images, labels)
                attacked = [k for k, i in enumerate(indices) if i < robust_total]
                if attack is not None and attacked:
                    sub_images, sub_labels = images[attacked], labels[attacked]
                    counts[1] += _count_correct(model, attack(sub_images, sub_labels), sub_labels)
    finally:
        model.train(was_training)
    counts = all_reduce_sum(counts, context)
    clean = counts[0].item() / total
    robust = None if robust_total == 0 else counts[1].item() / robust_total
    return clean, robust
