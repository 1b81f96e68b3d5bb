"""The one loop of every iterative attack: start, gradient, step rule, projection; restarts on top.

Table 1 of the paper reads every gradient attack as one dynamics with different update rules; so
does this module. :meth:`IterativeAttack.descend` is the loop (T gradient evaluations, each followed
by a :class:`StepRule` that moves the point inside the :class:`Ball`), :meth:`IterativeAttack.start`
the clean input or a uniform draw from the ball, and :meth:`IterativeAttack.perturb` the best of
``restarts`` independent runs. An attack supplies its rule (sign steps, momentum, accumulated
momentum, DAA's blob term: one small class each, in the attack's own file) and, for a sampler such
as HMCAM, what one run is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hmcam.attacks.ball import Ball
from hmcam.attacks.base import Attack
from hmcam.attacks.norms import per_example
from hmcam.core.validate import check_flag, check_positive_float, check_positive_int


class StepRule(ABC):
    """One update of the loop: from a point and the objective's gradient there to the next point.

    A rule is built fresh for every run, so its state (a momentum, Adam-style moments) starts at
    zero; ``t`` counts the gradient evaluations of the run from 1.
    """

    @abstractmethod
    def step(self, ball: Ball, point: Tensor, grad: Tensor, t: int) -> Tensor:
        """The next iterate, inside ``ball``."""


@dataclass(frozen=True)
class Trajectory:
    """The end of one run of the loop and the objective at its start.

    The first gradient evaluation gives J and the logits at the start point for free; a
    Metropolis-Hastings test needs them. The rule passed to the loop keeps its final state.
    """

    end: Tensor
    start_objective: Tensor
    start_logits: Tensor


class IterativeAttack(Attack):
    """An attack made of runs of the loop: ``steps`` gradient evaluations a run, ``restarts`` runs.

    ``alpha`` defaults to ``default_step_ratio * eps / steps`` per example. ``random_start=True``
    starts each run from a uniform point of the ball (PGD's start; any iterative attack takes it).
    With ``restarts > 1`` each example keeps its first successful run or, while none succeeded, the
    run with the highest objective (one extra forward pass per run scores it); the paper
    (section 3.2) reads restarts as independent, parallel chains. ``bound_aware_step=True`` leaves
    the coordinates held at a pixel bound out of every step (:meth:`Ball.direction`), ``False``
    keeps them; the default None takes the norm's reference step (bound-aware under L1 only).
    """

    #: The default step as a multiple of eps / steps.
    default_step_ratio: float = 1.0
    #: Whether a run starts from a uniform point of the ball unless ``random_start`` says otherwise.
    default_random_start: bool = False

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor | None,
        alpha: float | None = None,
        steps: int = 10,
        restarts: int = 1,
        *,
        random_start: bool | None = None,
        bound_aware_step: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps, **kwargs)
        self.alpha = None if alpha is None else check_positive_float("alpha", alpha)
        self.steps = check_positive_int("steps", steps)
        self.restarts = check_positive_int("restarts", restarts)
        self.random_start = (
            self.default_random_start if random_start is None else check_flag("random_start", random_start)
        )
        self.bound_aware_step = None if bound_aware_step is None else check_flag("bound_aware_step", bound_aware_step)

    def step_size(self, ball: Ball) -> Tensor | float:
        """``alpha`` if given, else ``default_step_ratio * eps / steps`` for each example."""
        return self.alpha if self.alpha is not None else self.default_step_ratio * ball.eps / self.steps

    def start(self, ball: Ball, generator: torch.Generator | None) -> Tensor:
        """The first iterate of a run: the clean input, or a uniform draw from the ball."""
        return ball.random_point(generator) if self.random_start else ball.center

    def descend(self, ball: Ball, y: Tensor, point: Tensor, rule: StepRule) -> Trajectory:
        """The loop: ``steps`` times, the gradient of J at the point, then the rule's step."""
        first: tuple[Tensor, Tensor] | None = None
        if self.bound_aware_step is not None:
            ball = ball.with_bound_aware_step(self.bound_aware_step)
        for t in range(1, self.steps + 1):
            objective, logits, grad = self.gradient(point, y)
            if first is None:
                first = (objective, logits)
            point = rule.step(ball, point, grad, t)
        assert first is not None  # steps >= 1
        return Trajectory(point, *first)

    @abstractmethod
    def run(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        """One independent run from a start point to the adversarial example it returns."""

    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        """The best of ``restarts`` runs per example (first success, else highest objective)."""
        best = self.run(ball, y, generator)
        if self.restarts == 1:
            return best
        best_objective, best_success = self.score(best, y)
        for _ in range(self.restarts - 1):
            candidate = self.run(ball, y, generator)
            objective, success = self.score(candidate, y)
            better = ~best_success & (success | (objective > best_objective))
            best = torch.where(per_example(better, best), candidate, best)
            best_objective = torch.where(better, objective, best_objective)
            best_success = best_success | success
        return best

    def score(self, point: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Objective and success at ``point``; success is undefined (False) for callable losses."""
        logits, objective = self.evaluate(point, y)
        return objective, self.outcome(logits, y)

    def outcome(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per-example success of a point from its logits; always False for callable (label-free) losses."""
        if self.labelled:
            return self.succeeded(logits, y)
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
