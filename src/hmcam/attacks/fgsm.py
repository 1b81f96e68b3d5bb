"""FGSM (Goodfellow et al., 2015): one step of size eps along the steepest-ascent direction."""

from __future__ import annotations

import torch
from torch import Tensor
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.base import Attack


class FGSM(Attack):
    """Fast gradient sign method: ``x + eps * sign(grad J(x, y))`` for L-inf (Eq. 8 with one step).

    For L2 and L1 the sign is replaced by the norm's bound-aware steepest-ascent direction, so the
    step lands on the sphere of radius eps where the pixel bounds allow. In the paper's Table 1 it
    is HMC with an implicit potential and kinetic energy and no iteration.
    """

    @override
    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        _, _, grad = self.gradient(ball.center, y)
        return ball.step(ball.center, ball.eps, grad)
