"""FGSM (Goodfellow et al., 2015): one step of size eps along the steepest-ascent direction."""

from __future__ import annotations

import torch
from torch import Tensor

from hmcam.attacks.base import Attack, Ball


class FGSM(Attack):
    """Fast gradient sign method: ``x + eps * sign(grad J(x, y))`` for L-inf (Eq. 8 with one step).

    For L2 and L1 the sign is replaced by the norm's steepest-ascent direction, so the step lands on
    the sphere of radius eps. In the paper's Table 1 it is HMC with an implicit potential and kinetic
    energy and no iteration.
    """

    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        _, _, grad = self.gradient(ball.center, y)
        return ball.step(ball.center, ball.eps, grad)
