"""I-FGSM / BIM (Kurakin et al., 2017): iterated FGSM steps of size alpha, projected on the ball."""

from __future__ import annotations

import torch
from torch import Tensor
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.loop import IterativeAttack, StepRule


class SteepestAscent(StepRule):
    """The textbook step ``x <- P(x + alpha * sign(grad))`` (Eq. 8); the norm's direction for L2 / L1."""

    def __init__(self, alpha: Tensor | float) -> None:
        self.alpha = alpha

    @override
    def step(self, ball: Ball, point: Tensor, grad: Tensor, t: int) -> Tensor:
        return ball.step(point, self.alpha, grad)


class IFGSM(IterativeAttack):
    """Iterative FGSM: ``steps`` updates ``x <- P(x + alpha * sign(grad J))`` (Eq. 8).

    ``alpha`` defaults to ``eps / steps`` (Kurakin et al.), so the iterates can just reach the
    boundary of the ball; with a per-example eps the default step is per example too.
    ``random_start=True`` starts from a uniform point of the ball, which turns it into PGD. Every
    attack built on the textbook loop derives from this class and replaces only :meth:`rule`.
    """

    def rule(self, ball: Ball) -> StepRule:
        """The update rule of one run, built fresh so that its state starts at zero."""
        return SteepestAscent(self.step_size(ball))

    @override
    def run(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.descend(ball, y, self.start(ball, generator), self.rule(ball)).end


BIM = IFGSM
