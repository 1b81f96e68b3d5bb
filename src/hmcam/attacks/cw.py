"""Carlini-Wagner L2 (Carlini & Wagner, 2017): a minimum-norm attack in tanh space."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.base import Attack
from hmcam.attacks.losses import margin
from hmcam.attacks.norms import per_example
from hmcam.core.validate import check_flag, check_non_negative_float, check_positive_float, check_positive_int


class CW(Attack):
    """CW-L2: minimize ``||x' - x||_2^2 - c * min(J(x'), kappa)`` over ``x' = box(tanh(w))`` with Adam.

    J is the attack objective (the CW margin by default, so ``-J`` is the paper's f function), and
    ``kappa`` the confidence. An example counts as adversarial only when it is misclassified (or hits
    its target) with a logit margin of at least ``kappa``, Carlini and Wagner's own rule; for a
    callable loss, when ``J >= kappa``. A binary search over c (``binary_search_steps`` rounds,
    starting at ``c``, multiplied by 10 until a first success) finds the smallest such perturbation
    per example. Returns, per example, the adversarial example of smallest L2 norm found, or the
    clean input when none was found. It has no eps. ``abort_early`` ends an example's round once its
    own loss stopped decreasing (checked every tenth of the steps, the only host synchronization), so
    an example's result does not depend on the batch it is in.
    """

    uses_eps = False
    default_loss = "cw"

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
        **kwargs: Any,
    ) -> None:
        super().__init__(model, None, norm="l2", **kwargs)
        self.c = check_positive_float("c", c)
        self.kappa = check_non_negative_float("kappa", kappa)
        self.steps = check_positive_int("steps", steps)
        self.lr = check_positive_float("lr", lr)
        self.binary_search_steps = check_positive_int("binary_search_steps", binary_search_steps)
        self.abort_early = check_flag("abort_early", abort_early)

    def confident(self, logits: Tensor, objective: Tensor, y: Tensor) -> Tensor:
        """Per-example success with confidence: misclassified (or on target) by a logit margin >= kappa."""
        if not self.labelled:
            return objective >= self.kappa
        lead = margin(logits, y)
        return self.succeeded(logits, y) & ((-lead if self.targeted else lead) >= self.kappa)

    @override
    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        low, high = ball.bounds
        x = ball.center
        w_start = torch.atanh(((x - low) / (high - low) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
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
            # An example whose loss stalled is finished for this round: its later iterates are ignored,
            # exactly as if it had been attacked alone and the round had stopped.
            active = torch.ones_like(found)
            previous = torch.full_like(const, math.inf)
            for step in range(self.steps):
                candidate = low + (torch.tanh(w) + 1) / 2 * (high - low)
                logits, objective = self.forward(self.model_input(candidate), y)
                logits, objective = logits.to(x.dtype), objective.to(x.dtype)
                distance = (candidate - x).pow(2).flatten(1).sum(1)
                loss = distance - const * objective.clamp(max=self.kappa)
                (w.grad,) = torch.autograd.grad(loss.sum(), w)
                optimizer.step()
                success = active & self.confident(logits.detach(), objective.detach(), y)
                improved = success & (distance.detach() < best_norm)
                best_norm = torch.where(improved, distance.detach(), best_norm)
                best = torch.where(per_example(improved, best), candidate.detach(), best)
                found |= success
                if self.abort_early and (step + 1) % check_every == 0:
                    current = loss.detach()
                    active &= ~(current > previous - 1e-4 * previous.abs())
                    previous = current
                    if not bool(active.any()):
                        break
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        return best
