"""I-FGSM / BIM (Kurakin et al., 2017): iterated FGSM steps of size alpha, projected on the ball."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.loop import IterativeAttack, StepRule, rows
from hmcam.core.validate import check_flag


class SteepestAscent(StepRule):
    """The textbook step ``x <- P(x + alpha * sign(grad))`` (Eq. 8); the norm's direction for L2 / L1."""

    per_example_state = True

    def __init__(self, alpha: Tensor | float) -> None:
        self.alpha = alpha

    @override
    def step(self, ball: Ball, point: Tensor, grad: Tensor, t: int) -> Tensor:
        return ball.step(point, self.alpha, grad)

    @override
    def subset(self, keep: Tensor) -> None:
        self.alpha = rows(self.alpha, keep)


class IFGSM(IterativeAttack):
    """Iterative FGSM: ``steps`` updates ``x <- P(x + alpha * sign(grad J))`` (Eq. 8).

    ``alpha`` defaults to ``eps / steps`` (Kurakin et al.), so the iterates can just reach the
    boundary of the ball; with a per-example eps the default step is per example too.
    ``random_start=True`` starts from a uniform point of the ball, which turns it into PGD. Every
    attack built on the textbook loop derives from this class and replaces only :meth:`rule`.
    ``early_exit=True`` stops each example at its first fooling iterate (see :class:`IterativeAttack`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float | Tensor,
        alpha: float | None = None,
        steps: int = 10,
        restarts: int = 1,
        *,
        early_exit: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps, alpha, steps, restarts, **kwargs)
        self.early_exit = check_flag("early_exit", early_exit)

    def rule(self, ball: Ball) -> StepRule:
        """The update rule of one run, built fresh so that its state starts at zero."""
        return SteepestAscent(self.step_size(ball))

    @override
    def run(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.descend(ball, y, self.start(ball, generator), self.rule(ball)).end


BIM = IFGSM
