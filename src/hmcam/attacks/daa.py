"""DAA (Zheng, Chen & Ren, AAAI 2019): distributionally adversarial attack, the Lagrangian-blob variant."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.loop import StepRule, rows
from hmcam.attacks.losses import margin
from hmcam.attacks.pgd import PGD
from hmcam.core.validate import check_positive_float


def interpolated_median(values: Tensor) -> Tensor:
    """The median of a 1-D tensor, averaging the two middle values for an even count (as numpy does).

    ``torch.quantile`` refuses inputs over 16M elements (a batch over 4096 here) and
    ``torch.median`` takes the lower middle value; two ``kthvalue`` calls have neither limit.
    """
    count = values.numel()
    lower = values.kthvalue((count + 1) // 2).values
    upper = values.kthvalue(count // 2 + 1).values
    return (lower + upper) / 2


def blob_interaction(points: Tensor, grads: Tensor, c: float) -> Tensor:
    """``phi_i = g_i + (c / B) * sum_j K_ij * (g_j - (x_i - x_j) / h^2)`` for every particle i.

    K is an RBF kernel between the flattened particles with the median-heuristic bandwidth
    ``h^2 = median(||x_i - x_j||^2) / (2 log B)``: the Wasserstein gradient flow of DAA's Eq. 9,
    discretized with the blob method. A lone particle has no neighbours, so phi = g.
    """
    batch = points.shape[0]
    if batch == 1:
        return grads
    flat_points, flat_grads = points.flatten(1), grads.flatten(1)
    squared = torch.cdist(flat_points, flat_points).pow(2)
    bandwidth = (interpolated_median(squared.flatten()) / (2 * math.log(batch))).clamp_min(1e-12)
    kernel = torch.exp(-squared / (2 * bandwidth))
    repulsion = (kernel.sum(dim=1, keepdim=True) * flat_points - kernel @ flat_points) / bandwidth
    return (flat_grads + c / batch * (kernel @ flat_grads - repulsion)).reshape(grads.shape)


class Blob(StepRule):
    """DAA's step: a steepest-ascent step of size alpha along the particles' blob interaction.

    The interaction couples the examples of the batch (the particles), so dropping fooled ones
    would change the steps of the others: with early exit every example runs to the end.
    """

    per_example_state = False

    def __init__(self, alpha: Tensor | float, c: float) -> None:
        self.alpha = alpha
        self.c = c

    @override
    def step(self, ball: Ball, point: Tensor, grad: Tensor, t: int) -> Tensor:
        return ball.step(point, self.alpha, blob_interaction(point, grad, self.c))

    @override
    def subset(self, keep: Tensor) -> None:
        self.alpha = rows(self.alpha, keep)


class DAA(PGD):
    """DAA-BLOB: PGD on a distribution of adversarial examples, whose particles are the batch.

    Each step follows :func:`blob_interaction` instead of the gradient: one example's update borrows
    the gradients of its neighbours, so, unlike every other attack here, a result depends on the
    batch it is in. Choices, since the paper leaves them open: the sign of the kernel interaction,
    the bandwidth and ``c = 1.1`` for cross-entropy (10 for the CW margin) follow the authors'
    public code; the particles are the examples of the given batch (the authors also reshuffle the
    whole test set between rounds of 10 steps, which a batched library cannot do); random start and
    restarts as in :class:`PGD`. A batch of one example reduces to PGD.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float | Tensor,
        alpha: float | None = None,
        steps: int = 10,
        restarts: int = 1,
        *,
        c: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps, alpha, steps, restarts, **kwargs)
        default = 10.0 if self.loss is margin else 1.1
        self.c = default if c is None else check_positive_float("c", c)

    def interaction(self, points: Tensor, grads: Tensor) -> Tensor:
        """The blob interaction of ``points`` with this attack's ``c`` (see :func:`blob_interaction`)."""
        return blob_interaction(points, grads, self.c)

    @override
    def rule(self, ball: Ball) -> StepRule:
        return Blob(self.step_size(ball), self.c)
