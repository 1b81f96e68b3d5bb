"""The per-epoch check of a model in training: clean and PGD accuracy on fixed test examples.

The robust subset is always the first ``n`` examples of the test split and the PGD random start uses
a fixed seed, so numbers from different epochs and runs are comparable. With several processes
each evaluates every ``world_size``-th example and the counts are summed. Evaluation runs inside
``torch.random.fork_rng``: it never moves the training's random streams, so adding or changing it
cannot change the trained weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hmcam.attacks import PGD
from hmcam.core.batching import LabelledDataset, iterate_batches
from hmcam.core.distributed import DistributedContext, all_reduce_sum


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
