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
    per example. Returns, per example, the adversarial example of smallest L2 norm found over all
    steps and rounds. With ``kappa > 0`` an example for which no iterate reached the margin gets the
    misclassified (or on-target) iterate of largest margin instead, as Foolbox does; the clean input
    when no iterate succeeded at all. After each call ``last_margin`` holds the margin each returned
    example reaches (see :meth:`lead`): ``>= kappa`` for a full success, in ``[0, kappa)`` for the
    fallback, negative for the clean input. It has no eps.

    ``abort_early`` follows Carlini and Wagner's reference implementation: every tenth of the steps
    the round ends once the batch's total loss exceeds 0.9999 times its value at the previous check.
    ``per_example_abort=True`` decides it per example instead, so that an example's result does not
    depend on its batch; but a misclassified example's loss rises while Adam overshoots back across
    the decision boundary, so it stops too early (perturbations 10% larger than torchattacks' CW on
    a Fashion-MNIST LeNet, see docs/paper-notes.md).
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
        per_example_abort: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, None, norm="l2", **kwargs)
        self.c = check_positive_float("c", c)
        self.kappa = check_non_negative_float("kappa", kappa)
        self.steps = check_positive_int("steps", steps)
        self.lr = check_positive_float("lr", lr)
        self.binary_search_steps = check_positive_int("binary_search_steps", binary_search_steps)
        self.abort_early = check_flag("abort_early", abort_early)
        self.per_example_abort = check_flag("per_example_abort", per_example_abort)
        #: Per-example margin reached by the examples of the last call (see :meth:`lead`), or None before one.
        self.last_margin: Tensor | None = None

    def confident(self, logits: Tensor, objective: Tensor, y: Tensor) -> Tensor:
        """Per-example success with confidence: misclassified (or on target) by a logit margin >= kappa."""
        reached = self.lead(logits, objective, y) >= self.kappa
        return reached & self.succeeded(logits, y) if self.labelled else reached

    def lead(self, logits: Tensor, objective: Tensor, y: Tensor) -> Tensor:
        """Per-example margin toward success: ``max_{j != y} z_j - z_y`` untargeted, its negative targeted.

        For a callable loss it is the objective J itself; :meth:`confident` compares it with ``kappa``.
        """
        if not self.labelled:
            return objective
        value = margin(logits, y)
        return -value if self.targeted else value

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
        # The fallback for kappa > 0: the successful iterate of largest margin, kept while no iterate
        # reaches the margin (Foolbox returns such an example too; ``last_margin`` tells them apart).
        fallback = x.clone()
        fallback_lead = torch.full_like(const, -math.inf)
        check_every = max(1, self.steps // 10)
        for _ in range(self.binary_search_steps):
            w = w_start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(batch, dtype=torch.bool, device=x.device)
            # An example whose loss stalled is finished for this round: its later iterates are ignored,
            # exactly as if it had been attacked alone and the round had stopped.
            active = torch.ones_like(found)
            previous = torch.full_like(const, math.inf)
            previous_total = math.inf
            for step in range(self.steps):
                candidate = low + (torch.tanh(w) + 1) / 2 * (high - low)
                logits, objective = self.forward(self.model_input(candidate), y)
                logits, objective = logits.to(x.dtype), objective.to(x.dtype)
                distance = (candidate - x).pow(2).flatten(1).sum(1)
                loss = distance - const * objective.clamp(max=self.kappa)
                (w.grad,) = torch.autograd.grad(loss.sum(), w)
                optimizer.step()
                logits, objective, distance = logits.detach(), objective.detach(), distance.detach()
                success = active & self.confident(logits, objective, y)
                improved = success & (distance < best_norm)
                best_norm = torch.where(improved, distance, best_norm)
                best = torch.where(per_example(improved, best), candidate.detach(), best)
                found |= success
                if self.kappa > 0:
                    reached = self.lead(logits, objective, y)
                    hit = self.succeeded(logits, y) if self.labelled else objective >= 0
                    closer = active & hit & (reached > fallback_lead)
                    fallback_lead = torch.where(closer, reached, fallback_lead)
                    fallback = torch.where(per_example(closer, fallback), candidate.detach(), fallback)
                if self.abort_early and self.per_example_abort and (step + 1) % check_every == 0:
                    current = loss.detach()
                    active &= ~(current > previous - 1e-4 * previous.abs())
                    previous = current
                    if not bool(active.any()):
                        break
                elif self.abort_early and not self.per_example_abort and step % check_every == 0:
                    # Carlini and Wagner's rule: the round ends once the batch's total loss stopped decreasing.
                    total = float(loss.detach().sum())
                    if total > previous_total * 0.9999:
                        break
                    previous_total = total
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        result = torch.where(per_example(torch.isfinite(best_norm), best), best, fallback)
        logits, objective = self.evaluate(result, y)
        self.last_margin = self.lead(logits, objective, y)
        return result
