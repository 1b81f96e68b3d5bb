"""MI-FGSM (Dong et al., 2018) and the paper's M-PGD (MI-FGSM with a random start)."""

from __future__ import annotations

import torch
from torch import Tensor

from hmcam.attacks.base import Ball
from hmcam.attacks.ifgsm import IFGSM
from hmcam.attacks.norms import per_example


class MIFGSM(IFGSM):
    """Momentum iterative FGSM: ``g <- decay * g + grad / ||grad||_1``, then a step along ``g``.

    The gradient is L1-normalized per example before accumulation, so examples with small gradients
    are not drowned by the momentum. In the paper's Table 1 this updates both theta and v of HMC but
    has no Metropolis-Hastings correction. Defaults follow Dong et al.: ``decay=1.0``,
    ``alpha = eps / steps``, no random start.
    """

    def __init__(self, model: torch.nn.Module, eps: float | Tensor, alpha: float | None = None,
                 steps: int = 10, *, decay: float = 1.0, random_start: bool = False, **kwargs) -> None:
        super().__init__(model, eps, alpha, steps, random_start=random_start, **kwargs)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or decay < 0:
            raise ValueError(f"decay must be a number >= 0, got {decay!r}")
        self.decay = float(decay)

    def iterate(self, ball: Ball, x_adv: Tensor, y: Tensor) -> Tensor:
        alpha = self.step_size(ball)
        momentum = torch.zeros_like(x_adv)
        for _ in range(self.steps):
            _, _, grad = self.gradient(x_adv, y)
            l1 = grad.abs().reshape(grad.shape[0], -1).sum(dim=1).clamp_min(1e-12)
            momentum = self.decay * momentum + grad / per_example(l1, grad)
            x_adv = ball.step(x_adv, alpha, momentum)
        return x_adv


class MPGD(MIFGSM):
    """M-PGD, the paper's strongest baseline: MI-FGSM from a uniform random start in the ball.

    From a random start the iterates must travel up to 2 * eps, so the default step is PGD's
    ``2.5 * eps / steps`` rather than MI-FGSM's ``eps / steps``.
    """

    default_step_ratio = 2.5

    def __init__(self, model: torch.nn.Module, eps: float | Tensor, alpha: float | None = None,
                 steps: int = 10, *, random_start: bool = True, **kwargs) -> None:
        super().__init__(model, eps, alpha, steps, random_start=random_start, **kwargs)
