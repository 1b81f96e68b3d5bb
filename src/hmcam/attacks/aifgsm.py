"""AI-FGSM: the accumulated-momentum inner loop of Algorithm 2 alone (S = 1, T = N, no MH)."""

from __future__ import annotations

import torch
from torch import Tensor

from hmcam.attacks.base import Attack, Ball, check_positive_float, check_positive_int, check_unit_interval


class AIFGSM(Attack):
    """Accumulated-momentum FGSM (Algorithm 2, lines 4-13; section 3.3, Eq. 10-11).

    Each step, with g the gradient of the example's own loss:
    ``v = beta1 v + (1 - beta1) g``, ``e = beta2 e + (1 - beta2) g^2``, ``e_hat = max(e_hat, e)``,
    ``step = min(eps, alpha / (b1 (sqrt(e_hat / b2) + delta)))`` with ``b1 = 1 - beta1^t`` and
    ``b2 = 1 - beta2^t``, then ``theta += step * direction(v)`` (sign for L-inf) and a projection.
    The step is element-wise: coordinates with a large, steady gradient take small steps and flat
    ones large steps, capped at eps. The paper's Eq. 7 uses a batch-mean loss (so does the authors'
    code), which would make the step depend on the batch size; per-example losses avoid that.
    ``alpha`` defaults to ``default_step_ratio * eps / steps``.
    """

    #: The default alpha as a multiple of eps / steps.
    default_step_ratio: float = 1.0

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float | Tensor,
        alpha: float | None = None,
        steps: int = 10,
        *,
        beta1: float = 0.95,
        beta2: float = 0.999,
        delta: float = 1e-8,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, **kwargs)
        self.alpha = None if alpha is None else check_positive_float("alpha", alpha)
        self.steps = check_positive_int("steps", steps)
        self.beta1 = check_unit_interval("beta1", beta1)
        self.beta2 = check_unit_interval("beta2", beta2)
        self.delta = check_positive_float("delta", delta)

    def trajectory(self, ball: Ball, theta: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run T accumulated-momentum steps from ``theta`` with the moments reset to zero.

        Returns the end point, its momentum v_T, and the objective and logits at the start point
        (the first gradient evaluation gives them for free; Metropolis-Hastings needs them).
        """
        alpha = self.alpha if self.alpha is not None else self.default_step_ratio * ball.eps / self.steps
        velocity = torch.zeros_like(theta)
        second = torch.zeros_like(theta)
        second_max = torch.zeros_like(theta)
        start_objective = start_logits = None
        for t in range(1, self.steps + 1):
            objective, logits, grad = self.gradient(theta, y)
            if start_objective is None:
                start_objective, start_logits = objective, logits
            velocity = self.beta1 * velocity + (1 - self.beta1) * grad
            second = self.beta2 * second + (1 - self.beta2) * grad * grad
            second_max = torch.maximum(second_max, second)
            bias1 = 1 - self.beta1**t
            bias2 = 1 - self.beta2**t
            step = torch.minimum(alpha / (bias1 * ((second_max / bias2).sqrt() + self.delta)), ball.eps)
            theta = ball.step(theta, step, velocity)
        return theta, velocity, start_objective, start_logits

    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.trajectory(ball, ball.center, y)[0]
