"""DAA (Zheng, Chen & Ren, AAAI 2019): distributionally adversarial attack, the Lagrangian-blob variant."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hmcam.attacks.base import Ball, check_positive_float
from hmcam.attacks.losses import margin
from hmcam.attacks.pgd import PGD


class DAA(PGD):
    """DAA-BLOB: PGD on a distribution of adversarial examples, whose particles are the batch.

    Each step moves every example along the steepest-ascent direction of
    ``phi_i = g_i + (c / B) * sum_j K_ij * (g_j - (x_i - x_j) / h^2)``, where g is the loss gradient
    and K an RBF kernel between the flattened examples with the median-heuristic bandwidth
    ``h^2 = median(||x_i - x_j||^2) / (2 log B)``. The kernel term couples the examples: one
    example's update borrows the gradients of its neighbours (the Wasserstein gradient flow of the
    paper's Eq. 9, discretized with the blob method), so, unlike every other attack here, a result
    depends on the batch it is in.

    Choices, since the paper leaves them open: the sign of the kernel interaction, the bandwidth
    and ``c = 1.1`` for cross-entropy (10 for the CW margin) follow the authors' public code; the
    particles are the examples of the given batch (the authors also reshuffle the whole test set
    between rounds of 10 steps, which a batched library cannot do); random start and restarts as
    in :class:`PGD`. A batch of one example reduces to PGD.
    """

    def __init__(self, model: torch.nn.Module, eps: float | Tensor, alpha: float | None = None,
                 steps: int = 10, restarts: int = 1, *, c: float | None = None, **kwargs) -> None:
        super().__init__(model, eps, alpha, steps, restarts, **kwargs)
        default = 10.0 if self.loss is margin else 1.1
        self.c = default if c is None else check_positive_float("c", c)

    def interaction(self, x_adv: Tensor, grad: Tensor) -> Tensor:
        """The kernel-smoothed gradient plus the particles' interaction term, for every example."""
        batch = x_adv.shape[0]
        if batch == 1:
            return grad
        points = x_adv.flatten(1)
        gradients = grad.flatten(1)
        squared = torch.cdist(points, points).pow(2)
        # The interpolated median, as the authors' np.median; torch.median would take the lower middle value.
        bandwidth = (squared.flatten().quantile(0.5) / (2 * math.log(batch))).clamp_min(1e-12)
        kernel = torch.exp(-squared / (2 * bandwidth))
        repulsion = (kernel.sum(dim=1, keepdim=True) * points - kernel @ points) / bandwidth
        smoothed = gradients + self.c / batch * (kernel @ gradients - repulsion)
        return smoothed.reshape(grad.shape)

    def iterate(self, ball: Ball, x_adv: Tensor, y: Tensor) -> Tensor:
        alpha = self.step_size(ball)
        for _ in range(self.steps):
            _, _, grad = self.gradient(x_adv, y)
            x_adv = ball.step(x_adv, alpha, self.interaction(x_adv, grad))
        return x_adv
