"""Carlini-Wagner L2 (Carlini & Wagner, 2017): a minimum-norm attack in tanh space."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hmcam.attacks.base import Attack, Ball, check_positive_float, check_positive_int
from hmcam.attacks.losses import LossFunction
from hmcam.attacks.norms import per_example


class CW(Attack):
    """CW-L2: minimize ``||x' - x||_2^2 - c * min(J(x'), kappa)`` over ``x' = box(tanh(w))`` with Adam.

    J is the attack objective (the CW margin by default, so ``-J`` is the paper's f function), and
    ``kappa`` the confidence. A binary search over c (``binary_search_steps`` rounds, starting at
    ``c``, multiplied by 10 until a first success) finds the smallest perturbation per example.
    Returns, per example, the adversarial example of smallest L2 norm found, or the clean input
    when none was found. It has no eps; ``abort_early`` stops a round whose loss has stopped
    decreasing (checked every tenth of the steps, the only host synchronization).
    """

    uses_eps = False

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        c: float = 1e-3,
        kappa: float = 0.0,
        steps: int = 1000,
        lr: float = 0.01,
        binary_search_steps: int = 9,
        abort_early: bool = True,
        loss: str | LossFunction = "cw",
        **kwargs,
    ) -> None:
        super().__init__(model, None, norm="l2", loss=loss, **kwargs)
        self.c = check_positive_float("c", c)
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or kappa < 0:
            raise ValueError(f"kappa must be a number >= 0, got {kappa!r}")
        self.kappa = float(kappa)
        self.steps = check_positive_int("steps", steps)
        self.lr = check_positive_float("lr", lr)
        self.binary_search_steps = check_positive_int("binary_search_steps", binary_search_steps)
        self.abort_early = bool(abort_early)

    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        low, high = ball.bounds
        x = ball.center
        scaled = ((x - low) / (high - low) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        w_start = torch.atanh(scaled)
        batch = x.shape[0]
        const = torch.full((batch,), self.c, device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, math.inf)
        best_norm = torch.full_like(const, math.inf)
        best = x.clone()
        check_every = max(1, self.steps // 10)
        for _ in range(self.binary_search_steps):
            w = w_start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(batch, dtype=torch.bool, device=x.device)
            previous = math.inf
            for step in range(self.steps):
                candidate = low + (torch.tanh(w) + 1) / 2 * (high - low)
                logits, objective = self.forward(candidate, y)
                distance = (candidate - x).pow(2).flatten(1).sum(1)
                total = (distance - const * objective.clamp(max=self.kappa)).sum()
                (w.grad,) = torch.autograd.grad(total, w)
                optimizer.step()
                success = self.succeeded(logits.detach(), y) if self.labelled else objective.detach() >= self.kappa
                improved = success & (distance.detach() < best_norm)
                best_norm = torch.where(improved, distance.detach(), best_norm)
                best = torch.where(per_example(improved, best), candidate.detach(), best)
                found |= success
                if self.abort_early and (step + 1) % check_every == 0:
                    current = float(total.detach())
                    if current > previous * 0.9999:
                        break
                    previous = current
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        return best
