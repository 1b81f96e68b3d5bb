"""FAB and FAB-T, the Fast Adaptive Boundary attacks (Croce & Hein 2020), AutoAttack's minimum-norm attacks.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack"
(ICML 2020), untargeted and in the targeted form AutoAttack runs; reference code fra31/auto-attack,
``fab_base.py``, ``fab_pt.py`` and ``fab_projections.py``. The projections onto a hyperplane
intersected with the pixel box are written here from their optimality conditions, batched over points.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks.apgd import target_count
from hmcam.attacks.ball import Ball
from hmcam.attacks.base import Attack
from hmcam.attacks.norms import per_example
from hmcam.core.validate import check_flag, check_number, check_positive_float, check_positive_int

Projection = Callable[[Tensor, Tensor, Tensor, tuple[float, float]], Tensor]


# ----------------------------------------------------------------------------------- projections
def _descent(points: Tensor, w: Tensor, b: Tensor, bounds: tuple[float, float]) -> tuple[Tensor, ...]:
    """The problem in a sign-free form: move ``u_i >= 0`` along ``toward_i`` to close ``gap = sum |w_i| u_i``.

    A minimal step onto ``{z : w.z = b}`` moves every coordinate against the side the point is on, so
    coordinate i moves along ``toward_i = -sign(w_i) * sign(w.p - b)`` by ``u_i``, at most ``room_i``
    (its distance to the bound it moves to). Returns ``toward``, ``|w|``, ``room`` and ``|w.p - b|``.
    """
    gap = (w * points).sum(dim=1) - b
    side = torch.where(gap >= 0, 1.0, -1.0).to(points.dtype)
    toward = -torch.sign(w) * side[:, None]
    low, high = bounds
    room = torch.where(toward > 0, high - points, points - low).clamp_min(0)
    return toward, w.abs(), room, gap.abs()


def _water_level(slope: Tensor, cap: Tensor, need: Tensor) -> Tensor:
    """The level ``mu >= 0`` with ``sum_i min(mu * slope_i, cap_i) = need``, exact from the sorted knots.

    The sum is piecewise linear and increasing in mu with knots ``cap_i / slope_i``; the knot count
    below ``need`` picks the linear piece, which is then solved. Needs ``need <= sum(cap)``.
    """
    knots = torch.where(slope > 0, cap / slope.clamp_min(torch.finfo(slope.dtype).tiny), 0.0)
    knots, order = knots.sort(dim=1)
    slope, cap = slope.gather(1, order), cap.gather(1, order)
    zero = torch.zeros_like(need)[:, None]
    filled = torch.cat([zero, cap.cumsum(dim=1)], dim=1)  # caps of the first j knots, j = 0..n
    rest = slope.sum(dim=1, keepdim=True) - torch.cat([zero, slope.cumsum(dim=1)], dim=1)  # slopes after j
    at_knots = filled[:, 1:] + knots * rest[:, 1:]
    piece = (at_knots < need[:, None]).sum(dim=1, keepdim=True).clamp_max(knots.shape[1] - 1)
    level = (need[:, None] - filled.gather(1, piece)) / rest.gather(1, piece).clamp_min(1e-30)
    return level.clamp_min(0)


def _boxed(water: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> Projection:
    """A projection from its move ``u(|w|, room, gap, feasible)``; unreachable planes get the box corner."""

    def project(points: Tensor, w: Tensor, b: Tensor, bounds: tuple[float, float]) -> Tensor:
        toward, size, room, gap = _descent(points, w, b, bounds)
        feasible = gap <= (size * room).sum(dim=1)
        # No point of the box reaches the plane: the corner that comes closest to it (all coordinates
        # moved to their bound), as the reference does for L2 and L1.
        move = torch.where(feasible[:, None], water(size, room, torch.where(feasible, gap, 0), feasible), room)
        return toward * move

    project.__doc__ = water.__doc__
    return project


@_boxed
def project_linf(size: Tensor, room: Tensor, gap: Tensor, feasible: Tensor) -> Tensor:
    """The smallest L-inf step ``d`` with ``w.(p + d) = b`` and ``p + d`` in the box, for a batch of points.

    ``project_linf(points [B, n], w [B, n], b [B], bounds) -> d [B, n]``: every coordinate with
    ``w_i != 0`` moves ``min(lam, room_i)``, with ``lam`` solving ``sum_i |w_i| min(lam, room_i) = gap``.
    """
    return torch.minimum(_water_level(size, size * room, gap), room)


@_boxed
def project_l2(size: Tensor, room: Tensor, gap: Tensor, feasible: Tensor) -> Tensor:
    """The smallest L2 step ``d`` with ``w.(p + d) = b`` and ``p + d`` in the box, for a batch of points.

    ``project_l2(points [B, n], w [B, n], b [B], bounds) -> d [B, n]``: the KKT solution
    ``u_i = min(mu |w_i|, room_i)``, with ``mu`` solving ``sum_i |w_i| min(mu |w_i|, room_i) = gap``.
    """
    return torch.minimum(_water_level(size.square(), size * room, gap) * size, room)


@_boxed
def project_l1(size: Tensor, room: Tensor, gap: Tensor, feasible: Tensor) -> Tensor:
    """The smallest L1 step ``d`` with ``w.(p + d) = b`` and ``p + d`` in the box, for a batch of points.

    ``project_l1(points [B, n], w [B, n], b [B], bounds) -> d [B, n]``: the coordinates with the
    largest ``|w_i|`` (most gap closed per unit moved) go to their bound in turn, the last one partly.
    """
    order = size.argsort(dim=1, descending=True)
    slope, cap = size.gather(1, order), (size * room).gather(1, order)
    before = cap.cumsum(dim=1) - cap  # gap closed by the coordinates ahead of each one
    share = ((gap[:, None] - before) / slope.clamp_min(1e-30)).clamp_min(0)
    move = torch.minimum(share, room.gather(1, order)) * (slope > 0)
    return torch.zeros_like(move).scatter(1, order, move)


PROJECTIONS: dict[str, Projection] = {"linf": project_linf, "l2": project_l2, "l1": project_l1}


# ---------------------------------------------------------------------------------------- attacks
class _BoundarySearch(Attack):
    """What FAB and FAB-T share: the restarts, the random start, one run and the acceptance of its points.

    Labels travel as ``(label, target)`` rows (the target column is unused by FAB); a subclass gives
    the goals (one target column each, every goal tried with ``restarts`` runs on the examples still
    robust) and the linearised boundary of one step, :meth:`hyperplane`.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor,
        steps: int = 100,
        restarts: int = 1,
        *,
        norm: str = "linf",
        bounds: tuple[float, float] = (0.0, 1.0),
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        random_start: bool | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, eps, norm=norm, bounds=bounds, seed=seed)
        if self.norm.name not in PROJECTIONS:
            raise ValueError(f"{type(self).__name__} supports norm 'linf', 'l2' or 'l1', got {norm!r}")
        self.project = PROJECTIONS[self.norm.name]
        self.steps = check_positive_int("steps", steps)
        self.restarts = check_positive_int("restarts", restarts)
        self.alpha_max = check_number("alpha_max", alpha_max, 0.0, 1.0)
        self.eta = check_positive_float("eta", eta)
        self.beta = check_number("beta", beta, 0.0, 1.0, open_low=True)
        self.random_start = None if random_start is None else check_flag("random_start", random_start)

    def outcome(self, logits: Tensor, y: Tensor) -> Tensor:
        """Misclassified with respect to the true label (column 0 of ``y``), whatever the target."""
        return logits.argmax(dim=1) != y[:, 0]

    @abstractmethod
    def goals(self, y: Tensor, logits: Tensor) -> list[Tensor]:
        """The ``(label, target)`` rows of each search, from the labels and the clean logits."""

    @abstractmethod
    def hyperplane(self, point: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """The boundary of one step, linearised at ``point``: the margin f [B] and its gradient w [B, n]."""

    # ------------------------------------------------------------------------ goals and restarts
    @override
    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        pairs = torch.stack([y, y], dim=1)
        logits, _ = self.evaluate(ball.center, pairs)
        result, fooled = ball.center.clone(), self.outcome(logits, pairs)
        for goal in self.goals(y, logits):
            for restart in range(self.restarts):
                index = (~fooled).nonzero().squeeze(1)
                if index.numel() == 0:
                    return result
                at_random = restart > 0 if self.random_start is None else self.random_start
                sub = ball.subset(index)
                point, size = self.search(sub, goal[index], at_random, generator)
                # The reference's check on the returned points: misclassified again and within eps.
                check, _ = self.evaluate(point, goal[index])
                won = self.outcome(check, goal[index]) & (size <= sub.eps.flatten())
                result[index[won]] = point[won]
                fooled[index[won]] = True
        return result

    # ------------------------------------------------------------------------------------ one run
    def start(self, ball: Ball, generator: torch.Generator | None) -> Tensor:
        """The reference's random start ``x0 + eps / 2 * t / |t|``: t uniform in the cube (L-inf), else Gaussian."""
        x0 = ball.center
        if self.norm.name == "linf":
            t = 2 * torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) - 1
        else:
            t = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        unit = t / per_example(self.norm.measure(t), t)
        return (x0 + ball.eps * unit / 2).clamp(*self.bounds)

    def search(
        self, ball: Ball, pairs: Tensor, at_random: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """One FAB run: the smallest misclassified point found and its norm (inf where none)."""
        x0 = ball.center
        x1 = self.start(ball, generator) if at_random else x0
        best = x0.clone()
        size = torch.full((x0.shape[0],), math.inf, device=x0.device, dtype=x0.dtype)
        flat0 = x0.flatten(1)
        for _ in range(self.steps):
            margin, w = self.hyperplane(x1, pairs)
            b = (w * x1.flatten(1)).sum(dim=1) - margin  # the plane w.z = b where the linearised margin is 0
            d = self.project(torch.cat([x1.flatten(1), flat0]), torch.cat([w, w]), torch.cat([b, b]), self.bounds)
            d = d.reshape(2, *x0.shape)
            lengths = self.norm.measure(d.flatten(0, 1)).clamp_min(1e-8).reshape(2, -1)
            alpha = per_example((lengths[0] / lengths.sum(dim=0)).clamp(0, self.alpha_max), x0)
            x1 = ((x1 + self.eta * d[0]) * (1 - alpha) + (x0 + self.eta * d[1]) * alpha).clamp(*self.bounds)
            logits, _ = self.evaluate(x1, pairs)
            adversarial = self.outcome(logits, pairs)
            norm = self.norm.measure(x1 - x0)
            smaller = adversarial & (norm < size)
            best = torch.where(per_example(smaller, x1), x1, best)
            size = torch.where(smaller, norm, size)
            # Step back toward x0 from every misclassified iterate, so the search keeps shrinking it.
            x1 = torch.where(per_example(adversarial, x1), x0 + (x1 - x0) * self.beta, x1)
        return best, size


#: The dual of each norm, ``||w||_*``: the distance to the plane ``w.z = b`` is ``|w.p - b| / ||w||_*``.
DUAL_ORDERS = {"linf": 1.0, "l2": 2.0, "l1": math.inf}


class FAB(_BoundarySearch):
    """FAB (Croce & Hein 2020), untargeted: minimum-norm search toward the closest linearised boundary.

    ``FAB(model, eps, steps=100, restarts=1, *, norm="linf", ...)`` for ``norm="linf"``, ``"l2"`` or
    ``"l1"``; AutoAttack's ``version="plus"`` runs it with ``restarts=5``. Each of the ``steps``
    iterations takes the gradients of ``f_k = z_k - z_y`` for every class k at the iterate x1 (one
    forward pass and one backward pass per class), keeps the class whose linearised boundary is
    closest, the smallest ``|f_k| / (1e-12 + ||grad f_k||_*)`` with ``||.||_*`` the dual norm (the
    reference's ``dist1``), and then projects, extrapolates, keeps and steps back exactly as
    :class:`FABT` does with its one target; ``restarts`` runs go on the examples no earlier run has
    fooled within eps, the first from x0, later ones from the random start (``random_start=None``;
    True or False forces it for every run). An example returns the smallest point found if it is
    misclassified with norm <= eps, else its clean input; inputs already misclassified return
    unchanged. One run costs, per example, ``steps`` forward passes with ``classes`` backward passes
    each, plus ``steps`` forward passes to check the iterates.

    Reference: fra31/auto-attack, ``fab_base.py`` ``attack_single_run(is_targeted=False)`` and
    ``fab_pt.py`` ``get_diff_logits_grads_batch``. hmcam deviates where FABT does (the L-inf box
    projection, bounds other than [0, 1]) and excludes the true class by an infinite distance rather
    than ``f_y = 1e10``. torchattacks' port (``FAB(multi_targeted=False)``) has the original's run and
    projections; it differs in seeding and drawing from the global RNG, in not freezing the model's
    parameters, and in measuring the returned perturbation only for L-inf and L2 (L1 fails there).
    """

    @override
    def objective(self, logits: Tensor, y: Tensor) -> Tensor:
        """The margin to the closest wrong class, ``max_k z_k - z_y`` over k != y, zero on the boundary."""
        label = y[:, :1]
        return (logits - logits.gather(1, label)).scatter(1, label, -math.inf).amax(dim=1)

    @override
    def goals(self, y: Tensor, logits: Tensor) -> list[Tensor]:
        return [torch.stack([y, y], dim=1)]

    @override
    def hyperplane(self, point: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """The closest of the boundaries ``z_k = z_y``, linearised at ``point``, from every class's gradient."""
        fed = self.model_input(point.detach()).requires_grad_(True)
        logits, _ = self.forward(fed, pairs)
        classes = logits.shape[1]
        grads = [
            torch.autograd.grad(logits[:, k].sum(), fed, retain_graph=k < classes - 1)[0].flatten(1)
            for k in range(classes)
        ]
        g = torch.stack(grads, dim=1).to(point.dtype)  # [B, classes, n]
        label = pairs[:, :1]
        f = logits.detach().to(point.dtype)
        f = f - f.gather(1, label)
        g = g - g.gather(1, label[:, :, None].expand(-1, 1, g.shape[2]))
        dual = torch.linalg.vector_norm(g, ord=DUAL_ORDERS[self.norm.name], dim=2)
        distance = (f.abs() / (1e-12 + dual)).scatter(1, label, math.inf)
        k = distance.argmin(dim=1, keepdim=True)
        return f.gather(1, k).squeeze(1), g.gather(1, k[:, :, None].expand(-1, 1, g.shape[2])).squeeze(1)


class FABT(_BoundarySearch):
    """FAB-T (Croce & Hein 2020): minimum-norm search toward the boundary with each likely wrong class.

    ``FABT(model, eps, steps=100, restarts=1, *, n_target_classes=None, norm="linf", ...)`` for
    ``norm="linf"``, ``"l2"`` or ``"l1"``, with the options of :class:`FAB`; the defaults are
    AutoAttack's standard FAB-T. For rank
    r = 2 .. ``n_target_classes + 1`` (None: 9, or every wrong class below 10 classes; more than
    classes - 1 is an error, as in APGD-T) the target t is the class
    with the r-th largest clean logit, and ``restarts`` runs go on the examples no earlier run has
    fooled within eps. A run of ``steps`` iterations linearises ``f = z_t - z_y`` at the iterate x1
    (one forward and backward pass) and, with d1 and d2 the minimal steps from x1 and from the clean
    x0 onto ``{z : f + grad f . (z - x1) = 0}`` intersected with the ``bounds``, moves to

        x1 <- clip((x1 + eta d1)(1 - alpha) + (x0 + eta d2) alpha),  alpha = min(|d1| / (|d1| + |d2|), alpha_max)

    then, where x1 is misclassified (one forward pass), keeps it if it is the smallest perturbation
    so far and steps back: ``x1 <- x0 + beta (x1 - x0)``. The first run of each target starts at x0,
    later ones at ``x0 + eps / 2 * t / |t|`` (``random_start=None``; True or False forces it for
    every run). Untargeted in outcome: an example returns the smallest point found if it is
    misclassified with norm <= eps, else its clean input; inputs already misclassified return
    unchanged. Randomness comes from the attack's ``seed`` generator.

    FAB does not use :meth:`~hmcam.attacks.loop.IterativeAttack.descend`: it minimises the
    perturbation's norm instead of ascending a loss inside the ball, with its own projection onto
    the linearised boundary, extrapolation and backward step rather than a step rule, and eps only
    decides which of its points count. It deviates from the reference where the reference's box
    projection for L-inf ignores the box when the plane is out of reach (hmcam then moves to the
    box corner closest to the plane, like the reference's L2 and L1), and takes bounds other than [0, 1].
    """

    def __init__(self, *args: Any, n_target_classes: int | None = None, **options: Any) -> None:
        """FAB's arguments (``model, eps, steps=100, restarts=1, *, norm=...``) and ``n_target_classes``."""
        super().__init__(*args, **options)
        self.n_target_classes = (
            None if n_target_classes is None else check_positive_int("n_target_classes", n_target_classes)
        )

    @override
    def objective(self, logits: Tensor, y: Tensor) -> Tensor:
        """The target's margin ``z_t - z_y``, zero on the boundary; ``y`` holds (label, target) rows."""
        return logits.gather(1, y[:, 1:]).squeeze(1) - logits.gather(1, y[:, :1]).squeeze(1)

    @override
    def goals(self, y: Tensor, logits: Tensor) -> list[Tensor]:
        """One target per rank r = 2 .. n_target_classes + 1 of the clean logits."""
        ranking = logits.argsort(dim=1, descending=True)
        count = target_count(self.n_target_classes, logits.shape[1])
        return [torch.stack([y, ranking[:, rank]], dim=1) for rank in range(1, count + 1)]

    @override
    def hyperplane(self, point: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """The target's boundary ``z_t = z_y``, linearised at ``point`` (one gradient)."""
        margin, _, grad = self.gradient(point, pairs)
        return margin, grad.flatten(1)
