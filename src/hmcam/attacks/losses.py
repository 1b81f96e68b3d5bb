"""Per-example attack losses J(x', y): the potential energy that every attack ascends (Eq. 7).

Each loss returns one value per example (shape [B]), never a batch mean: summing per-example
losses gives every example its own gradient, so a result never depends on the batch it is in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFunction = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of each example: -log softmax(logits)[y]."""
    return F.cross_entropy(logits, labels, reduction="none")


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Carlini-Wagner margin max_{j != y} z_j - z_y: positive exactly when y is not the prediction."""
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), -torch.inf)
    return others.amax(dim=1) - true_logit


def dlr(logits: Tensor, labels: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12).

    ``z_pi1 >= z_pi2 >= ...`` are the sorted logits; the ratio is invariant to shifting and scaling
    the logits. A two-class model has no ``z_pi3`` (and ``z_pi1 - z_pi2`` would make the ratio a
    constant): there the denominator is 1, i.e. the plain CW margin.
    """
    if logits.shape[1] < 3:
        return margin(logits, labels)
    ordered = logits.sort(dim=1, descending=True).values
    return margin(logits, labels) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


LOSSES: dict[str, LossFunction] = {"ce": cross_entropy, "cw": margin, "dlr": dlr}


def get_loss(loss: str | LossFunction) -> LossFunction:
    """Resolve ``"ce"``, ``"cw"``, ``"dlr"`` or a callable ``(logits, y) -> per-example loss``."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss.lower() in LOSSES:
        return LOSSES[loss.lower()]
    raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a callable(logits, y)")
