"""APGD and APGD-T, AutoAttack's gradient attacks (Croce & Hein 2020), with L1-APGD (Croce & Hein 2021).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML 2020), and "Mind the box: l1-APGD for sparse adversarial attacks on
image classifiers" (ICML 2021); reference code fra31/auto-attack, ``autopgd_base.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.loop import ActiveSet, IterativeAttack, rows
from hmcam.attacks.losses import LossFunction
from hmcam.attacks.norms import L1Norm, LinfNorm, per_example
from hmcam.core.validate import check_flag, check_positive_int, check_unit_interval

MOMENTUM = 0.75
#: Target classes of APGD-T and FAB-T unless given: the reference's 9, or every wrong class below 10 classes.
DEFAULT_TARGETS = 9


def target_count(wanted: int | None, classes: int) -> int:
    """How many target classes a targeted AutoAttack attack takes on a ``classes``-class model.

    ``None`` gives :data:`DEFAULT_TARGETS` capped at ``classes - 1``; an explicit count above
    ``classes - 1`` is a ValueError (there are not that many wrong classes).
    """
    if wanted is None:
        return min(DEFAULT_TARGETS, classes - 1)
    if wanted > classes - 1:
        raise ValueError(
            f"n_target_classes={wanted} exceeds the {classes - 1} wrong classes of a {classes}-class model"
        )
    return wanted


def checkpoints(steps: int) -> list[int]:
    """Iteration counts after which L-inf / L2 APGD checks its step size: ``p_j * steps``, j >= 1.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, with the
    reference's integer rounding (``int(0.22 * steps)`` and so on, each at least 1).
    """
    length, least, shrink = (max(int(fraction * steps), 1) for fraction in (0.22, 0.06, 0.03))
    marks: list[int] = []
    while (marks[-1] if marks else 0) + length <= steps:
        marks.append((marks[-1] if marks else 0) + length)
        length = max(length - shrink, least)
    return marks


def targeted_dlr(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), ascended by APGD-T.

    Fallbacks below four classes: three classes use ``z_pi1 - z_pi3``; two classes use a
    denominator of 1 (there ``z_pi1 - z_pi2 = |z_y - z_t|`` would make the ratio a constant).
    """
    gap = logits.gather(1, targets[:, None]).squeeze(1) - logits.gather(1, labels[:, None]).squeeze(1)
    classes = logits.shape[1]
    if classes < 3:
        return gap
    ordered = logits.sort(dim=1, descending=True).values
    low = ordered[:, 2:4].mean(dim=1)
    return gap / (ordered[:, 0] - low + 1e-12)


def project_l1_box(ball: Ball, point: Tensor) -> Tensor:
    """The exact Euclidean projection of ``point`` onto the L1 ball intersected with the bounds.

    Coordinate i becomes ``sign(d_i) * clip(|d_i| - lam, 0, room_i)`` for ``d = point - center``,
    with ``room_i`` the distance to the bound that ``d_i`` points at and ``lam >= 0`` the root of the
    piecewise-linear ``sum_i clip(|d_i| - lam, 0, room_i) = eps``, found exactly from its sorted knots.
    """
    low, high = ball.bounds
    center = ball.center.flatten(1)
    delta = point.flatten(1) - center
    radius = ball.eps.reshape(-1, 1)
    size = delta.abs()
    room = torch.where(delta >= 0, high - center, center - low).clamp_min(0)
    knots, order = torch.cat([size - room, size], dim=1).sort(dim=1)
    turns = torch.cat([-torch.ones_like(size), torch.ones_like(size)], dim=1).gather(1, order)
    slope = turns.cumsum(dim=1)  # slope of the mass on (knot_k, knot_k+1)
    rise = (slope[:, :-1] * knots.diff(dim=1)).cumsum(dim=1)
    mass = room.sum(dim=1, keepdim=True) + torch.cat([torch.zeros_like(radius), rise], dim=1)
    last = ((mass >= radius).sum(dim=1, keepdim=True) - 1).clamp(0, knots.shape[1] - 1)
    excess = mass.gather(1, last) - radius
    lam = (knots.gather(1, last) + excess / (-slope.gather(1, last)).clamp_min(1)).clamp_min(0)
    inside = torch.minimum(size, room).sum(dim=1, keepdim=True) <= radius
    lam = torch.where(inside, torch.zeros_like(lam), lam)
    moved = delta.sign() * torch.minimum((size - lam).clamp_min(0), room)
    moved = moved * (radius / moved.abs().sum(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1)  # round-off
    return (center + moved).reshape(point.shape).clamp(low, high)


@dataclass
class Search:
    """The state of one APGD run: best point, its gradient and objective, last adversarial iterate."""

    best: Tensor
    best_grad: Tensor
    best_objective: Tensor
    adversarial: Tensor
    fooled: Tensor

    def record(self, point: Tensor, objective: Tensor, grad: Tensor, fooled: Tensor) -> None:
        """Keep ``point`` as the adversarial iterate where it fools, and as the best where J rose."""
        self.adversarial = torch.where(per_example(fooled, point), point, self.adversarial)
        self.fooled = self.fooled | fooled
        better = objective > self.best_objective
        self.best = torch.where(per_example(better, point), point, self.best)
        self.best_grad = torch.where(per_example(better, grad), grad, self.best_grad)
        self.best_objective = torch.where(better, objective, self.best_objective)

    def result(self) -> Tensor:
        """The last adversarial iterate where one was found, else the highest-objective point."""
        return torch.where(per_example(self.fooled, self.best), self.adversarial, self.best)

    def subset(self, keep: Tensor) -> None:
        """Keep the state of the examples at ``keep`` (a 1-D index into the batch) only."""
        self.best, self.best_grad, self.adversarial = self.best[keep], self.best_grad[keep], self.adversarial[keep]
        self.best_objective, self.fooled = self.best_objective[keep], self.fooled[keep]


class APGD(IterativeAttack):
    """Auto-PGD (Croce & Hein 2020): PGD with momentum and a step size halved at checkpoints.

    ``APGD(model, eps, steps=100, restarts=1, *, rho=0.75, loss="ce", ...)``; ``loss="dlr"`` gives
    APGD-DLR. L-inf / L2 (Algorithm 1): from ``x + eps * t / ||t||`` (t uniform in the cube for
    L-inf, Gaussian for L2), step ``eta = 2 * eps``;
    ``z = P(x_k + eta * sign(g_k))``, ``x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1}))``
    (plain ``z`` at k = 0). At each of :func:`checkpoints` eta is halved and the run restarts from
    its best point when J rose in at most ``rho`` of the window's steps, or when eta was not halved
    at the last checkpoint and the best J has not improved since. L1 (Croce & Hein 2021): no
    momentum; the step ``eps`` moves along the signs of the top ``k`` fraction of |g| (k = 0.2, then
    the best point's sparsity / 1.5 every 4% of the steps), the step shrinks by 1.5 (to eps / 10 at
    least) unless the best point got sparser (then reset to eps, restarting from it), and points
    are projected exactly on the L1 ball intersected with the bounds. Returned: the last iterate
    that fooled the model, else the highest-J point. Restarts run on the examples still unfooled.
    ``early_exit=True`` returns the first fooling iterate instead and drops fooled examples from
    the run at steps 1, 2, 4, 8, ... (:class:`~hmcam.attacks.loop.ActiveSet`). ``eot_iter > 1``
    averages every gradient over that many passes (Expectation over Transformation, for randomized
    models; the reference's ``eot_iter``); objective and logits are those of the last pass.

    APGD needs its own loop rather than :meth:`IterativeAttack.descend`: its step size and restart
    point depend on the whole run's history (checkpoints, best point and its gradient), and its
    momentum acts on iterates, not gradients; it keeps the Ball's projection and the norm's direction,
    but not :meth:`Ball.step`'s bound-aware direction, which the reference does not have.
    """

    default_loss = "ce"
    default_random_start = True

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor,
        steps: int = 100,
        restarts: int = 1,
        *,
        rho: float = 0.75,
        random_start: bool | None = None,
        norm: str = "linf",
        bounds: tuple[float, float] = (0.0, 1.0),
        targeted: bool = False,
        loss: str | LossFunction | None = None,
        seed: int | None = None,
        early_exit: bool = False,
        eot_iter: int = 1,
    ) -> None:
        super().__init__(
            model,
            eps,
            None,
            steps,
            restarts,
            random_start=random_start,
            norm=norm,
            bounds=bounds,
            targeted=targeted,
            loss=loss,
            seed=seed,
        )
        self.rho = check_unit_interval("rho", rho)
        self.early_exit = check_flag("early_exit", early_exit)
        self.eot_iter = check_positive_int("eot_iter", eot_iter)

    @override
    def gradient(self, point: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The loss gradient, averaged over ``eot_iter`` passes of a (possibly randomized) model."""
        objective, logits, grad = super().gradient(point, y)
        for _ in range(self.eot_iter - 1):
            objective, logits, more = super().gradient(point, y)
            grad = grad + more
        return objective, logits, grad / self.eot_iter if self.eot_iter > 1 else grad

    # ------------------------------------------------------------------------------ geometry
    def project(self, ball: Ball, point: Tensor) -> Tensor:
        """The ball's projection; exact onto the L1 ball intersected with the box for L1."""
        return project_l1_box(ball, point) if isinstance(ball.norm, L1Norm) else ball.project(point)

    @override
    def start(self, ball: Ball, generator: torch.Generator | None) -> Tensor:
        """The reference's start: ``x + eps * t / ||t||`` (L-inf, L2), P(x + Gaussian) for L1."""
        if not self.random_start:
            return ball.center
        like = ball.center
        if isinstance(ball.norm, LinfNorm):
            t = 2 * torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype) - 1
        else:
            t = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        if isinstance(ball.norm, L1Norm):
            return self.project(ball, like + t)
        return ball.project(like + ball.eps * t / per_example(ball.norm.measure(t) + 1e-12, t))

    # ------------------------------------------------------------------------------ one run
    @override
    def run(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.search(ball, y, generator)[0]

    def search(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """One APGD run of ``steps`` gradient evaluations after the start.

        Returns the points of the whole batch, whether each fooled the model, and the best objective
        (+inf for an example that left the run early).
        """
        point = self.start(ball, generator)
        objective, logits, grad = self.gradient(point, y)
        fooled = self.outcome(logits, y)
        state = Search(point, grad, objective, point, fooled)
        active = ActiveSet(point, self.steps) if self.early_exit else None
        if active is not None:
            active.record(point, fooled)
        if isinstance(ball.norm, L1Norm):
            self.ascend_l1(ball, y, state, point, grad, active)
        else:
            # The reference counts the first window's rises against an unfilled (zero) loss record, not
            # the start's J: a CE step always counts as a rise there, a DLR step of a correct example never.
            self.ascend(ball, y, state, point, grad, torch.zeros_like(objective), active)
        if active is None:
            return state.result(), state.fooled, state.best_objective
        best = torch.full_like(objective, math.inf)
        best[active.index] = state.best_objective
        return active.finish(state.result()), active.fooled, best

    def ascend(
        self,
        ball: Ball,
        y: Tensor,
        state: Search,
        point: Tensor,
        grad: Tensor,
        last: Tensor,
        active: ActiveSet | None = None,
    ) -> None:
        """L-inf / L2 APGD: momentum steps, step halving and restarts from the best point at checkpoints.

        With ``active``, fooled examples leave ``state`` (and the run) at the steps it says.
        """
        step = 2 * ball.eps
        marks = set(checkpoints(self.steps))
        previous, since = point, 0
        rises = torch.zeros_like(last)
        halved = torch.ones_like(last, dtype=torch.bool)
        best_at_mark = state.best_objective
        for k in range(self.steps):
            momentum, previous = point - previous, point
            z = ball.project(point + step * ball.norm.direction(grad))
            point = z if k == 0 else ball.project(point + MOMENTUM * (z - point) + (1 - MOMENTUM) * momentum)
            objective, logits, grad = self.gradient(point, y)
            fooled = self.outcome(logits, y)
            state.record(point, objective, grad, fooled)
            if active is not None:
                active.record(point, fooled)
            rises, last, since = rises + (objective > last).to(rises.dtype), objective, since + 1
            if k + 1 in marks:
                stalled = ~halved & (best_at_mark >= state.best_objective)
                halved = (rises <= self.rho * since) | stalled
                best_at_mark, rises, since = state.best_objective, torch.zeros_like(rises), 0
                halving = per_example(halved, point)
                step = torch.where(halving, step / 2, step)
                point = torch.where(halving, state.best, point)
                grad = torch.where(halving, state.best_grad, grad)
            keep = active.compact() if active is not None and active.due(k + 1) else None
            if keep is not None:
                state.subset(keep)
                ball, y, point, previous, grad = ball.subset(keep), y[keep], point[keep], previous[keep], grad[keep]
                step, rises, last, halved, best_at_mark = (
                    rows(value, keep) for value in (step, rises, last, halved, best_at_mark)
                )
                if keep.numel() == 0:
                    break

    def ascend_l1(
        self, ball: Ball, y: Tensor, state: Search, point: Tensor, grad: Tensor, active: ActiveSet | None = None
    ) -> None:
        """L1-APGD (Croce & Hein 2021): sparse sign steps with adaptive sparsity and step size.

        With ``active``, fooled examples leave ``state`` (and the run) at the steps it says.
        """
        dims = point[0].numel()
        full = ball.eps
        step = full
        fraction = torch.full((point.shape[0],), 0.2, device=point.device, dtype=point.dtype)
        sparsity = torch.full_like(fraction, float(dims))
        window = max(int(0.04 * self.steps), 1)
        for k in range(self.steps):
            magnitude = grad.abs().flatten(1)
            index = ((1 - fraction) * dims).clamp(0, dims - 1).long()[:, None]
            threshold = magnitude.sort(dim=1).values.gather(1, index)
            signs = (grad.flatten(1).sign() * (magnitude >= threshold)).reshape(grad.shape)
            count = per_example(signs.abs().flatten(1).sum(dim=1), signs)
            point = self.project(ball, point + step * signs / (count + 1e-10))
            objective, logits, grad = self.gradient(point, y)
            fooled = self.outcome(logits, y)
            state.record(point, objective, grad, fooled)
            if active is not None:
                active.record(point, fooled)
            if (k + 1) % window == 0:
                current = (state.best - ball.center).flatten(1).ne(0).sum(dim=1).to(point.dtype)
                sparser = current < 0.95 * sparsity
                fraction, sparsity = current / dims / 1.5, current
                restarting = per_example(sparser, point)
                step = torch.where(restarting, full, step / 1.5)
                step = torch.minimum(torch.maximum(step, full / 10), full)
                point = torch.where(restarting, state.best, point)
                grad = torch.where(restarting, state.best_grad, grad)
            keep = active.compact() if active is not None and active.due(k + 1) else None
            if keep is not None:
                state.subset(keep)
                ball, y, point, grad = ball.subset(keep), y[keep], point[keep], grad[keep]
                full, step, fraction, sparsity = (rows(value, keep) for value in (full, step, fraction, sparsity))
                if keep.numel() == 0:
                    break

    # ------------------------------------------------------------------------------ restarts
    @override
    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        logits, _ = self.evaluate(ball.center, y)
        result, fooled = ball.center.clone(), self.outcome(logits, y)
        best = torch.full_like(fooled, -math.inf, dtype=ball.center.dtype)
        for _ in range(self.restarts):
            self.attack_unfooled(ball, y, generator, result, fooled, best)
        return result

    def attack_unfooled(
        self, ball: Ball, y: Tensor, generator: torch.Generator | None, result: Tensor, fooled: Tensor, best: Tensor
    ) -> None:
        """One run on the examples not yet fooled; updates ``result``, ``fooled`` and ``best`` in place."""
        index = (~fooled).nonzero().squeeze(1)
        if index.numel() == 0:
            return
        points, found, objective = self.search(ball.subset(index), y[index], generator)
        keep = found | (objective > best[index])
        result[index[keep]] = points[keep]
        best[index[keep]] = objective[keep]
        fooled[index] = fooled[index] | found


class APGDT(APGD):
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, one run per likely wrong class.

    ``APGDT(model, eps, steps=100, restarts=1, *, n_target_classes=None, ...)``. For rank r = 2 ..
    ``n_target_classes + 1`` the target t is the class with the r-th largest clean logit, and APGD
    ascends :func:`targeted_dlr` on the examples no earlier run has fooled.
    Untargeted in outcome: an example is fooled when any run finds a point misclassified with
    respect to its true label. Below four classes the DLR denominator falls back as described
    there. The loss is fixed and ``targeted`` is not accepted. ``n_target_classes=None`` takes 9
    (the reference's) or, on fewer classes, every wrong class; more than classes - 1 is an error.
    """

    default_loss = "dlr"

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor,
        steps: int = 100,
        restarts: int = 1,
        *,
        n_target_classes: int | None = None,
        rho: float = 0.75,
        random_start: bool | None = None,
        norm: str = "linf",
        bounds: tuple[float, float] = (0.0, 1.0),
        seed: int | None = None,
        early_exit: bool = False,
        eot_iter: int = 1,
    ) -> None:
        super().__init__(
            model,
            eps,
            steps,
            restarts,
            rho=rho,
            random_start=random_start,
            norm=norm,
            bounds=bounds,
            seed=seed,
            early_exit=early_exit,
            eot_iter=eot_iter,
        )
        self.n_target_classes = (
            None if n_target_classes is None else check_positive_int("n_target_classes", n_target_classes)
        )

    @override
    def objective(self, logits: Tensor, y: Tensor) -> Tensor:
        """Targeted DLR; ``y`` holds the pair (true label, target) in each row."""
        return targeted_dlr(logits, y[:, 0], y[:, 1])

    @override
    def outcome(self, logits: Tensor, y: Tensor) -> Tensor:
        return logits.argmax(dim=1) != y[:, 0]

    @override
    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        logits, _ = self.evaluate(ball.center, torch.stack([y, y], dim=1))
        result, fooled = ball.center.clone(), logits.argmax(dim=1) != y
        best = torch.full_like(fooled, -math.inf, dtype=ball.center.dtype)
        ranking = logits.argsort(dim=1, descending=True)
        for rank in range(1, target_count(self.n_target_classes, logits.shape[1]) + 1):
            pairs = torch.stack([y, ranking[:, rank]], dim=1)
            for _ in range(self.restarts):
                self.attack_unfooled(ball, pairs, generator, result, fooled, best)
        return result
