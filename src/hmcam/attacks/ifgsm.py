"""I-FGSM / BIM (Kurakin et al., 2017): iterated FGSM steps of size alpha, projected on the ball."""

from __future__ import annotations

import torch
from torch import Tensor

from hmcam.attacks.base import Attack, Ball, check_positive_float, check_positive_int


class IFGSM(Attack):
    """Iterative FGSM: ``steps`` updates ``x <- P(x + alpha * sign(grad))`` (Eq. 8).

    ``alpha`` defaults to ``eps / steps`` (Kurakin et al.), so the iterates can just reach the
    boundary of the ball; with a per-example eps the default step is per example too.
    ``random_start=True`` starts from a uniform point of the ball, which turns it into PGD.
    """

    #: The default step as a multiple of eps / steps.
    default_step_ratio: float = 1.0

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float | Tensor,
        alpha: float | None = None,
        steps: int = 10,
        *,
        random_start: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, **kwargs)
        self.steps = check_positive_int("steps", steps)
        self.alpha = None if alpha is None else check_positive_float("alpha", alpha)
        self.random_start = bool(random_start)

    def step_size(self, ball: Ball) -> Tensor | float:
        """``alpha`` if given, else ``default_step_ratio * eps / steps`` for each example."""
        return self.alpha if self.alpha is not None else self.default_step_ratio * ball.eps / self.steps

    def start(self, ball: Ball, generator: torch.Generator | None) -> Tensor:
        """The first iterate: the clean input, or a uniform draw from the ball."""
        return ball.random_point(generator) if self.random_start else ball.center

    def iterate(self, ball: Ball, x_adv: Tensor, y: Tensor) -> Tensor:
        """Run ``steps`` projected steepest-ascent steps from ``x_adv``."""
        alpha = self.step_size(ball)
        for _ in range(self.steps):
            _, _, grad = self.gradient(x_adv, y)
            x_adv = ball.step(x_adv, alpha, grad)
        return x_adv

    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.iterate(ball, self.start(ball, generator), y)


BIM = IFGSM
