"""MI-FGSM (Dong et al., 2018) and the paper's M-PGD (MI-FGSM with a random start)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.ifgsm import IFGSM
from hmcam.attacks.loop import StepRule, rows
from hmcam.attacks.norms import per_example
from hmcam.core.validate import check_non_negative_float


class Momentum(StepRule):
    """``g <- decay * g + grad / ||grad||_1``, then a steepest-ascent step of size alpha along ``g``.

    The gradient is L1-normalized per example before accumulation, so examples with small gradients
    are not drowned by the momentum.
    """

    per_example_state = True

    def __init__(self, alpha: Tensor | float, decay: float) -> None:
        self.alpha = alpha
        self.decay = decay
        self.momentum: Tensor | float = 0.0

    @override
    def step(self, ball: Ball, point: Tensor, grad: Tensor, t: int) -> Tensor:
        l1 = grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12)
        self.momentum = self.decay * self.momentum + grad / per_example(l1, grad)
        return ball.step(point, self.alpha, self.momentum)

    @override
    def subset(self, keep: Tensor) -> None:
        self.alpha, self.momentum = rows(self.alpha, keep), rows(self.momentum, keep)


class MIFGSM(IFGSM):
    """Momentum iterative FGSM: I-FGSM stepping along an accumulated, L1-normalized gradient.

    In the paper's Table 1 this updates both theta and v of HMC but has no Metropolis-Hastings
    correction. Defaults follow Dong et al.: ``decay=1.0``, ``alpha = eps / steps``, no random start.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float | Tensor,
        alpha: float | None = None,
        steps: int = 10,
        restarts: int = 1,
        *,
        decay: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps, alpha, steps, restarts, **kwargs)
        self.decay = check_non_negative_float("decay", decay)

    @override
    def rule(self, ball: Ball) -> StepRule:
        return Momentum(self.step_size(ball), self.decay)


class MPGD(MIFGSM):
    """M-PGD, the paper's strongest baseline: MI-FGSM from a uniform random start in the ball.

    From a random start the iterates must travel up to 2 * eps, so the default step is PGD's
    ``2.5 * eps / steps`` rather than MI-FGSM's ``eps / steps``. ``restarts`` works as for PGD.
    """

    default_step_ratio = 2.5
    default_random_start = True
