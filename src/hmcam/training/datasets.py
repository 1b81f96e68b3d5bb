"""The data of a training run: its two splits, loaded by rank 0 first, and the order of each epoch.

:func:`load_datasets` loads the training split and the split per-epoch evaluation reads
(:func:`evaluation_split`); under ``torchrun`` rank 0 loads (and, with ``download``, fetches) them
alone, and the other processes read the files after a barrier, once they are complete.
:class:`EpochOrder` deals each epoch's minibatches to the processes.
"""

from __future__ import annotations

from typing import TypeAlias

from torch.utils.data import BatchSampler, DistributedSampler

from hmcam.core.distributed import DistributedContext, barrier
from hmcam.data import ImageDataset, ImageFolder, load_dataset
from hmcam.data.registry import SOURCES
from hmcam.training.config import TrainConfig

#: What :func:`load_datasets` returns each split as: a dataset held in memory, or a folder of images.
LoadedSplit: TypeAlias = ImageDataset | ImageFolder


def evaluation_split(dataset: str) -> str:
    """The split that per-epoch evaluation reads: ``"test"``, or ``"val"`` where there is no test split."""
    return "test" if "test" in SOURCES[dataset.lower()].splits else "val"


def _load(config: TrainConfig) -> tuple[LoadedSplit, LoadedSplit]:
    train = load_dataset(
        config.dataset, "train", root=config.data_root, download=config.download, limit=config.train_limit
    )
    test = load_dataset(
        config.dataset,
        evaluation_split(config.dataset),
        root=config.data_root,
        download=config.download,
        limit=config.test_limit,
    )
    return train, test


def load_datasets(config: TrainConfig, context: DistributedContext) -> tuple[LoadedSplit, LoadedSplit]:
    """The training split and the evaluation split of ``config.dataset``, as ``config`` limits them.

    Every process calls this; rank 0 alone may download, the others wait at a barrier until it is done.
    """
    if context.is_main:
        data = _load(config)
    barrier(context)
    if not context.is_main:
        data = _load(config)
    return data


class EpochOrder:
    """The minibatches of every epoch of ``dataset`` that fall to the calling process, as dataset indices.

    The data order of epoch ``e`` is a permutation drawn from a generator seeded with ``seed + e``
    (torch's DistributedSampler). Each of the ``world_size`` processes takes every
    ``world_size``-th index of it and batches of ``process_batch = batch_size // world_size``
    examples, so global batch ``j`` holds the same examples as batch ``j`` of a single-process run;
    the last incomplete global batch is dropped in both cases.
    """

    def __init__(self, dataset: LoadedSplit, batch_size: int, seed: int, context: DistributedContext) -> None:
        self.sampler: DistributedSampler[int] = DistributedSampler(
            dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.process_batch = batch_size // context.world_size
        #: Minibatches per epoch, the same on every process.
        self.batches_per_epoch = len(self.sampler) // self.process_batch
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training split has {len(dataset)} examples, fewer than one batch of {batch_size}")

    def batches(self, epoch: int) -> list[list[int]]:
        """The dataset indices of this process's share of each minibatch of ``epoch`` (0-based), in order."""
        self.sampler.set_epoch(epoch)
        return list(BatchSampler(self.sampler, self.process_batch, drop_last=True))
