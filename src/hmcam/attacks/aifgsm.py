"""AI-FGSM: the accumulated-momentum rule of Algorithm 2 (lines 4-13; section 3.3, Eq. 10-11)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.ifgsm import IFGSM
from hmcam.attacks.loop import StepRule, rows
from hmcam.core.validate import check_positive_float, check_unit_interval

ALPHA_SCALES = ("example", "batch")


@dataclass(frozen=True)
class Moments:
    """The accumulated-momentum hyper-parameters of Algorithm 2 (beta1, beta2, delta), checked, and alpha's scale.

    ``alpha_scale="example"`` takes alpha for per-example losses (this library's default);
    ``"batch"`` takes it on the paper's scale, whose Eq. 7 averages the loss over the batch.
    """

    beta1: float = 0.95
    beta2: float = 0.999
    delta: float = 1e-8
    alpha_scale: str = "example"

    def __post_init__(self) -> None:
        check_unit_interval("beta1", self.beta1)
        check_unit_interval("beta2", self.beta2)
        check_positive_float("delta", self.delta)
        if self.alpha_scale not in ALPHA_SCALES:
            raise ValueError(f"alpha_scale must be one of {ALPHA_SCALES}, got {self.alpha_scale!r}")

    def rule(
        self,
        alpha: Tensor | float,
        cap: Tensor,
        batch: int,
        refresh: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> AccumulatedMomentum:
        """A fresh rule for one run, steps capped at ``cap``, for a call on ``batch`` examples.

        A batch-mean loss divides every gradient, and so sqrt(e_hat), by the batch size B; multiplying
        alpha and delta by B reproduces the paper's step exactly with per-example gradients.
        ``refresh`` > 0 draws the initial momentum at random (see :class:`AccumulatedMomentum`).
        """
        if self.alpha_scale == "batch":
            return AccumulatedMomentum(alpha * batch, cap, replace(self, delta=self.delta * batch), refresh, generator)
        return AccumulatedMomentum(alpha, cap, self, refresh, generator)


class AccumulatedMomentum(StepRule):
    """Algorithm 2, lines 6-12: Adam-style moments give each coordinate its own step, capped at eps.

    With g the gradient of the example's own objective and t the step of the run:
    ``v = beta1 v + (1 - beta1) g``, ``e = beta2 e + (1 - beta2) g^2``, ``e_hat = max(e_hat, e)``,
    ``step = min(eps, alpha / (b1 (sqrt(e_hat / b2) + delta)))`` with ``b1 = 1 - beta1^t`` and
    ``b2 = 1 - beta2^t``, then ``theta <- P(theta + step * direction(v))``. Coordinates with a large,
    steady gradient take small steps and flat ones large steps. ``velocity`` is v_T after the run,
    whose |v| is the kinetic energy of HMCAM's Metropolis-Hastings test.

    Deviations, on purpose: delta is added outside the square root (Adam's form; the paper's text
    reads ``sqrt(e_hat / b2 + delta)``, which differs only for gradients below sqrt(delta)); and the
    direction is the norm's steepest ascent of v (sign for L-inf, v / ||v||_2 for L2, a sparse
    top-k sign for L1), where the paper's gradient of K(v) = |v| is sign(v) for every ball.

    Momentum refresh (beyond the paper): with ``refresh`` = r > 0 the momentum starts at a random
    v_0 instead of zero, each coordinate drawn from the Laplace distribution, the canonical one of
    K(v) = |v|, with scale r times the mean |g| of the example's first gradient (gradients differ by
    orders of magnitude between models, so a fixed scale would mean nothing). ``initial_kinetic`` is
    then K(v_0) per example.
    """

    per_example_state = True

    def __init__(
        self,
        alpha: Tensor | float,
        cap: Tensor,
        moments: Moments,
        refresh: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.alpha = alpha
        self.cap = cap
        self.moments = moments
        self.refresh = refresh
        self.generator = generator
        self.velocity = self.second = self.second_max = self.initial_kinetic = torch.zeros(())

    def initial_velocity(self, grad: Tensor) -> Tensor:
        """v_0: zero, or Laplace draws of scale ``refresh`` times the example's mean |g| (K(v_0) is kept)."""
        if self.refresh == 0:
            self.initial_kinetic = grad.new_zeros(grad.shape[0])
            return torch.zeros_like(grad)
        magnitude = -torch.log1p(
            -torch.rand(grad.shape, generator=self.generator, device=grad.device, dtype=grad.dtype)
        )
        negative = torch.rand(grad.shape, generator=self.generator, device=grad.device, dtype=grad.dtype) < 0.5
        scale = self.refresh * grad.abs().flatten(1).mean(dim=1).view(-1, *([1] * (grad.dim() - 1)))
        velocity = torch.where(negative, -magnitude, magnitude) * scale
        self.initial_kinetic = velocity.abs().flatten(1).sum(dim=1)
        return velocity

    def size(self, grad: Tensor, t: int) -> Tensor:
        """Update the moments with the gradient of step ``t`` and return each coordinate's step, capped at eps."""
        beta1, beta2, delta = self.moments.beta1, self.moments.beta2, self.moments.delta
        if t == 1:
            self.velocity = self.initial_velocity(grad)
            self.second = self.second_max = torch.zeros_like(grad)
        self.velocity = beta1 * self.velocity + (1 - beta1) * grad
        self.second = beta2 * self.second + (1 - beta2) * grad * grad
        self.second_max = torch.maximum(self.second_max, self.second)
        bias1, bias2 = 1 - beta1**t, 1 - beta2**t
        return torch.minimum(self.alpha / (bias1 * ((self.second_max / bias2).sqrt() + delta)), self.cap)

    @override
    def step(self, ball: Ball, point: Tensor, grad: Tensor, t: int) -> Tensor:
        return ball.step(point, self.size(grad, t), self.velocity)

    @override
    def subset(self, keep: Tensor) -> None:
        # alpha and delta were scaled by the whole batch's size (alpha_scale="batch"), which stays.
        self.alpha, self.cap = rows(self.alpha, keep), rows(self.cap, keep)
        self.velocity, self.second = rows(self.velocity, keep), rows(self.second, keep)
        self.second_max, self.initial_kinetic = rows(self.second_max, keep), rows(self.initial_kinetic, keep)


class AIFGSM(IFGSM):
    """Accumulated-momentum FGSM: the loop with the :class:`AccumulatedMomentum` rule (S = 1, no MH).

    ``alpha`` defaults to ``default_step_ratio * eps / steps``. Losses are per example, so an
    example's step does not depend on its batch; the paper's Eq. 7 (and the authors' code) average
    the loss over the batch, which divides every gradient, and so sqrt(e_hat), by the batch size B:
    the paper's alpha equals ``alpha / B`` here. ``alpha_scale="batch"`` takes alpha on the paper's
    scale (alpha and delta are multiplied by B, which reproduces its batch-mean step exactly).
    With the default alpha on a small model the cap binds on nearly every coordinate from step 1,
    so the rule reduces to sign steps of size eps (``docs/paper-notes.md`` gives the measurement).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float | Tensor,
        alpha: float | None = None,
        steps: int = 10,
        restarts: int = 1,
        *,
        beta1: float = 0.95,
        beta2: float = 0.999,
        delta: float = 1e-8,
        alpha_scale: str = "example",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps, alpha, steps, restarts, **kwargs)
        self.moments = Moments(beta1, beta2, delta, alpha_scale)

    @override
    def rule(self, ball: Ball) -> StepRule:
        return self.moments.rule(self.step_size(ball), ball.eps, ball.center.shape[0])
