"""PGD (Madry et al., 2018) with random restarts, and its CW-margin variant used in robust evaluation."""

from __future__ import annotations

import torch
from torch import Tensor

from hmcam.attacks.base import Ball, check_positive_int
from hmcam.attacks.ifgsm import IFGSM
from hmcam.attacks.norms import per_example


class PGD(IFGSM):
    """Projected gradient descent from a uniform random start, with ``restarts`` independent runs.

    Madry et al.'s step ``alpha = 2.5 * eps / steps`` is the default. With several restarts each
    example keeps its first successful run, or, while none has succeeded, the run with the highest
    loss; the paper (section 3.2) reads the restarts as independent, parallel HMC chains.
    """

    default_step_ratio = 2.5

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float | Tensor,
        alpha: float | None = None,
        steps: int = 10,
        restarts: int = 1,
        *,
        random_start: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, alpha, steps, random_start=random_start, **kwargs)
        self.restarts = check_positive_int("restarts", restarts)

    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        best = self.iterate(ball, self.start(ball, generator), y)
        if self.restarts == 1:
            return best
        best_objective, best_success = self.score(best, y)
        for _ in range(self.restarts - 1):
            candidate = self.iterate(ball, self.start(ball, generator), y)
            objective, success = self.score(candidate, y)
            better = ~best_success & (success | (objective > best_objective))
            best = torch.where(per_example(better, best), candidate, best)
            best_objective = torch.where(better, objective, best_objective)
            best_success = best_success | success
        return best

    def score(self, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Objective and success of a finished run; success is undefined (False) for callable losses."""
        with torch.no_grad():
            logits, objective = self.forward(x_adv, y)
        success = self.succeeded(logits, y) if self.labelled else torch.zeros_like(objective, dtype=torch.bool)
        return objective, success


class CWLinf(PGD):
    """PGD on the Carlini-Wagner margin at a fixed eps: what adversarial-training papers call "CW".

    The margin ``max_{j != y} z_j - z_y`` has no vanishing softmax gradient, so it finds adversarial
    examples for confidently classified inputs where cross-entropy stalls.
    """

    def __init__(self, model: torch.nn.Module, eps: float | Tensor, alpha: float | None = None,
                 steps: int = 10, restarts: int = 1, *, loss="cw", **kwargs) -> None:
        super().__init__(model, eps, alpha, steps, restarts, loss=loss, **kwargs)
