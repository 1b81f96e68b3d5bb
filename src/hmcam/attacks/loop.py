"""The one loop of every iterative attack: start, gradient, step rule, projection; restarts on top.

Table 1 of the paper reads every gradient attack as one dynamics with different update rules; so
does this module. :meth:`IterativeAttack.descend` is the loop (T gradient evaluations, each followed
by a :class:`StepRule` that moves the point inside the :class:`Ball`), :meth:`IterativeAttack.start`
the clean input or a uniform draw from the ball, and :meth:`IterativeAttack.perturb` the best of
``restarts`` independent runs. An attack supplies its rule (sign steps, momentum, accumulated
momentum, DAA's blob term: one small class each, in the attack's own file) and, for a sampler such
as HMCAM, what one run is. :class:`ActiveSet` is early exit: the first fooling iterate of each
example kept, fooled examples dropped from the batch; ``descend`` and APGD's own loops use it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

import torch
from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.base import Attack
from hmcam.attacks.norms import per_example
from hmcam.core.validate import check_flag, check_positive_float, check_positive_int

T = TypeVar("T")
R = TypeVar("R")


class StepRule(ABC):
    """One update of the loop: from a point and the objective's gradient there to the next point.

    A rule is built fresh for every run, so its state (a momentum, Adam-style moments) starts at
    zero; ``t`` counts the gradient evaluations of the run from 1.
    """

    #: Whether an example's step depends on its own state and gradient only, so that examples can
    #: leave the batch mid-run (:meth:`subset`). False (unknown rules, DAA's blob term, which couples
    #: the examples of a batch) makes an early-exit loop keep every example to the end.
    per_example_state: ClassVar[bool] = False

    @abstractmethod
    def step(self, ball: Ball, point: Tensor, grad: Tensor, t: int) -> Tensor:
        """The next iterate, inside ``ball``."""

    def subset(self, keep: Tensor) -> None:
        """Keep the state of the examples at ``keep`` (a 1-D index into the batch) and drop the rest."""
        raise NotImplementedError(f"{type(self).__name__} cannot drop examples from its state")


def rows(value: T, keep: Tensor) -> T:
    """``value[keep]`` for a per-example tensor; a scalar or 0-dim tensor (shared by all examples) as is."""
    if isinstance(value, Tensor) and value.dim() > 0:
        return cast(T, value[keep])
    return value


class ActiveSet:
    """Early exit for one run on a batch: each example's first fooling iterate, and who is still attacked.

    A loop calls :meth:`record` after each gradient evaluation and, at the steps where :meth:`due`
    says so (t = 1, 2, 4, 8, ... before the last), :meth:`compact`, which retires the examples found
    so far and tells which rows of its working batch to keep; finding them is the run's only host
    synchronisation. :meth:`finish` assembles the whole batch's result.
    """

    def __init__(self, start: Tensor, steps: int, *, compact: bool = True) -> None:
        batch = start.shape[0]
        self.steps = steps
        self.compacting = compact
        #: Rows of the whole batch still in the working batch.
        self.index = torch.arange(batch, device=start.device)
        #: Whole batch: the first fooling iterate of every example retired so far, and which those are.
        self.points = start.clone()
        self.fooled = torch.zeros(batch, dtype=torch.bool, device=start.device)
        #: Working batch: whether an iterate fooled the example yet, and the first one that did.
        self.found = self.fooled.clone()
        self.first = start

    def record(self, point: Tensor, fooled: Tensor) -> None:
        """Keep ``point`` for the working examples it fools that no earlier iterate fooled."""
        hit = fooled & ~self.found
        self.first = torch.where(per_example(hit, point), point, self.first)
        self.found = self.found | hit

    def due(self, t: int) -> bool:
        """Whether to compact after ``t`` gradient evaluations: at t = 1, 2, 4, 8, ... below ``steps``."""
        return self.compacting and t & (t - 1) == 0 and t < self.steps

    def compact(self) -> Tensor | None:
        """Retire the examples found so far; the working rows to keep, or None when none leaves."""
        keep = (~self.found).nonzero().squeeze(1)
        if keep.numel() == self.index.numel():
            return None
        done = self.found.nonzero().squeeze(1)
        self.points[self.index[done]] = self.first[done]
        self.fooled[self.index[done]] = True
        self.index, self.found, self.first = self.index[keep], self.found[keep], self.first[keep]
        return keep

    def finish(self, fallback: Tensor) -> Tensor:
        """The whole batch: each fooled example's first fooling iterate, ``fallback`` (working rows) for the rest."""
        self.points[self.index] = torch.where(per_example(self.found, fallback), self.first, fallback)
        self.fooled[self.index] = self.found
        return self.points


@dataclass(frozen=True)
class Trajectory:
    """The end of one run of the loop and the objective at its start.

    The first gradient evaluation gives J and the logits at the start point for free; a
    Metropolis-Hastings test needs them. The rule passed to the loop keeps its final state (with
    early exit, that of the examples still running at the end).
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

    ``early_exit`` (a keyword of the attacks that offer it; off by default, so that attacks follow
    their reference algorithms) stops each example at its first fooling iterate, which it returns,
    and drops fooled examples from the batch at steps 1, 2, 4, 8, ... (:class:`ActiveSet`): robust
    accuracy asks only whether some point of the ball fools the model. ``gradients_spent`` counts
    the input gradients (examples times steps actually run) of the last call.
    """

    #: The default step as a multiple of eps / steps.
    default_step_ratio: float = 1.0
    #: Whether a run starts from a uniform point of the ball unless ``random_start`` says otherwise.
    default_random_start: bool = False
    #: Whether :meth:`descend` stops fooled examples early; set by the attacks that offer it.
    early_exit: bool = False

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
        self.gradients_spent = 0

    @override
    def guarded(self, x: Tensor, y: Tensor, body: Callable[[Ball, Tensor, torch.Generator | None], R]) -> R:
        self.gradients_spent = 0
        return super().guarded(x, y, body)

    @override
    def gradient(self, point: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self.gradients_spent += point.shape[0]
        return super().gradient(point, y)

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
        active = ActiveSet(point, self.steps, compact=rule.per_example_state) if self.early_exit else None
        for t in range(1, self.steps + 1):
            objective, logits, grad = self.gradient(point, y)
            if first is None:
                first = (objective, logits)
            if active is not None:
                active.record(point, self.outcome(logits, y))
            point = rule.step(ball, point, grad, t)
            keep = active.compact() if active is not None and active.due(t) else None
            if keep is not None:
                point, y, ball = point[keep], y[keep], ball.subset(keep)
                if keep.numel() == 0:
                    break
                rule.subset(keep)
        assert first is not None  # steps >= 1
        return Trajectory(point if active is None else active.finish(point), *first)

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
