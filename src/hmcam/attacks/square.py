"""Square attack (Andriushchenko et al., 2020): score-based black-box random search over square windows.

"Square Attack: a query-efficient black-box adversarial attack via random search" (ECCV 2020). It
only reads the model's logits, one forward pass per proposal, so it does not use the gradient loop
of :mod:`hmcam.attacks.loop`: there is no gradient, and an example's run ends at its own first
success instead of after a fixed number of steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.base import Attack
from hmcam.attacks.losses import get_loss
from hmcam.attacks.norms import TINY, per_example
from hmcam.core.validate import check_flag, check_number, check_positive_int

#: The reference's p schedule for a budget of 10000 queries: p_init / divisor while the (rescaled)
#: iteration is at most the threshold; past the last threshold p is p_init / 512.
SCHEDULE: tuple[tuple[int, int], ...] = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)
LAST_DIVISOR = 512


def square_fraction(iteration: int, n_queries: int, p_init: float, rescale: bool = True) -> float:
    """The fraction p of the image a window covers at ``iteration`` (0-based) of ``n_queries``.

    The reference's ``p_selection``: p_init is halved at each threshold of :data:`SCHEDULE` the
    iteration has passed (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000); with ``rescale`` (the
    reference's ``resc_schedule``) the iteration is first mapped to ``int(iteration / n_queries * 10000)``.
    """
    scaled = int(iteration / n_queries * 10000) if rescale else iteration
    for threshold, divisor in SCHEDULE:
        if scaled <= threshold:
            return p_init / divisor
    return p_init / LAST_DIVISOR


def _rectangle(rows: int, cols: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A [rows, cols] block of nested squares around its centre, unit L2 norm (the reference's ``eta_rectangles``).

    A pixel at Chebyshev distance d from ``(rows // 2, cols // 2)`` gets ``sum_{k >= d} 1 / (k + 1)^2``
    over ``k < max(rows, cols) // 2 + 1``: the sum of the squares of half-width k that contain it.
    """
    if rows == 0:
        return torch.zeros(0, cols, dtype=dtype, device=device)
    count = max(rows // 2, cols // 2) + 1
    weights = 1.0 / torch.arange(1, count + 1, dtype=dtype, device=device).square()
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum of weights[k] for k >= d
    row_distance = (torch.arange(rows, device=device) - rows // 2).abs()
    col_distance = (torch.arange(cols, device=device) - cols // 2).abs()
    block = tail[torch.maximum(row_distance[:, None], col_distance[None, :])]
    return block / block.square().sum().sqrt()


def square_pattern(size: int, transpose: bool, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The L2 attack's [size, size] update: two opposite-signed towers of nested squares, unit L2 norm.

    The reference's ``eta``: the top ``size // 2`` rows positive, the rest negative, transposed when
    ``transpose`` (a fair coin in the attack).
    """
    top = _rectangle(size // 2, size, dtype=dtype, device=device)
    bottom = -_rectangle(size - size // 2, size, dtype=dtype, device=device)
    pattern = torch.cat([top, bottom])
    pattern = pattern / pattern.square().sum().sqrt()
    return pattern.t() if transpose else pattern


class Square(Attack):
    """Square attack: random search that changes one square window of the image per model query.

    Signature ``Square(model, eps, n_queries=5000, p_init=0.8, restarts=1, *, norm="linf", ...)``,
    for ``norm="linf"`` or ``"l2"`` and [B, C, H, W] images. Each run starts from a random point on
    the ball's surface (L-inf: vertical stripes of +-eps; L2: a grid of the two-tower square
    patterns with random signs, rescaled to norm eps), then ``n_queries`` times draws one window of
    side ``round(sqrt(p * H * W))`` (p from :func:`square_fraction`) and proposes a change inside it:

    - L-inf: every pixel of the window set to ``x +- eps``, one random sign per channel;
    - L2: the window's perturbation replaced by a random-signed :func:`square_pattern` plus its old
      direction, with the mass of a second random window moved into it, the whole perturbation
      rescaled to norm eps.

    A proposal is kept when it increases the objective J or succeeds. J is the CW margin
    ``max_{j!=y} z_j - z_y`` when untargeted and ``-CE(z, target)`` when targeted, the reference's
    choices (any ``loss`` can be given instead). Only the still-unsuccessful examples are queried:
    an example stops at its first success. With ``restarts > 1`` the examples still unsuccessful
    start a new run; an example keeps its successful point or, if none, the run with the highest J.
    Inputs the model already gets wrong (or on target) are returned unchanged.

    A window's corner is the original's ``int(u * (H - s))``, which never reaches the last row and
    column (they change only at the start); ``every_corner=True`` draws it uniformly over all
    ``H - s + 1`` positions, which is stronger on small images (docs/paper-notes.md).
    ``rescale_schedule=False`` keeps the schedule's thresholds at their 10,000-query values, as
    AutoAttack runs Square (5,000 queries, ``resc_schedule=False``).

    After a call, :attr:`queries` holds each example's number of model queries, the paper's count:
    0 for an input already misclassified, else 1 for the start plus 1 per proposal, summed over
    restarts (at most ``restarts * (n_queries + 1)``); the clean check is not counted.

    Follows the authors' code (fra31/auto-attack ``square.py``) in the schedule, the window sides
    (at least 1 for L-inf, odd and at least 3 for L2, at most the image side), both starts, both
    updates and the acceptance rule, and like it draws one window position (and one pattern
    orientation) per query shared by the examples being attacked. It deviates where the original
    is a batching shortcut or a slip, none of which changes what one example's search does on
    average: the L-inf signs are drawn per example (the original draws one sign per channel for the
    whole batch); success is the base class's argmax test rather than a margin <= 0 (they differ
    only on exact ties); the L2 start uses tiles of side ``max(H // 5, 1)`` and skips tiles that do
    not fit (the original fails on images under 5 pixels or with a partial tile); unsuccessful
    examples return their best point instead of the clean input; randomness comes from the
    attack's ``seed`` generator, never the global RNG. torchattacks 3.5.1's ``Square`` is a port of
    the same code that also omits the cap of the window side at the image side and, for L2,
    measures the moved mass over all channels at once instead of per channel.
    """

    default_loss = "cw"

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor | None = None,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        *,
        norm: str = "linf",
        every_corner: bool = False,
        rescale_schedule: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps, norm=norm, **kwargs)
        self.every_corner = check_flag("every_corner", every_corner)
        self.rescale_schedule = check_flag("rescale_schedule", rescale_schedule)
        if self.norm.name not in ("linf", "l2"):
            raise ValueError(f"Square supports norm 'linf' or 'l2', got {norm!r}")
        if kwargs.get("loss") is None and self.targeted:
            self.loss = get_loss("ce")
        self.n_queries = check_positive_int("n_queries", n_queries)
        self.p_init = check_number("p_init", p_init, 0.0, 1.0, open_low=True)
        self.restarts = check_positive_int("restarts", restarts)
        #: Per-example model queries of the last call (see the class docstring); None before any call.
        self.queries: Tensor | None = None

    # ---------------------------------------------------------------------------------- the attack
    @override
    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        x = ball.center
        if x.dim() != 4:
            raise ValueError(f"Square attacks images: x must be [B, C, H, W], got shape {tuple(x.shape)}")
        logits, _ = self.evaluate(x, y)
        done = self.outcome(logits, y)
        best = x.clone()
        best_objective = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for _ in range(self.restarts):
            todo = (~done).nonzero().flatten()
            if todo.numel() == 0:
                break
            point, objective, success, used = self.search(ball.subset(todo), y[todo], generator)
            better = success | (objective > best_objective[todo])
            best[todo] = torch.where(per_example(better, point), point, best[todo])
            best_objective[todo] = torch.where(better, objective, best_objective[todo])
            done[todo] = success
            queries[todo] += used
        self.queries = queries
        return best

    def search(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One run: best point, its objective, success and the queries used, per example of ``ball``."""
        best = self.start(ball, generator)
        logits, objective = self.evaluate(best, y)
        success = self.outcome(logits, y)
        queries = torch.ones(best.shape[0], dtype=torch.long, device=best.device)
        for iteration in range(self.n_queries):
            todo = (~success).nonzero().flatten()
            if todo.numel() == 0:
                break
            p = square_fraction(iteration, self.n_queries, self.p_init, self.rescale_schedule)
            candidate = self.propose(ball.subset(todo), best[todo], p, generator)
            logits, candidate_objective = self.evaluate(candidate, y[todo])
            candidate_success = self.outcome(logits, y[todo])
            improved = candidate_objective > objective[todo]
            accepted = improved | candidate_success
            best[todo] = torch.where(per_example(accepted, candidate), candidate, best[todo])
            objective[todo] = torch.where(improved, candidate_objective, objective[todo])
            success[todo] = candidate_success
            queries[todo] += 1
        return best, objective, success, queries

    def outcome(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per-example success; always False for a callable (label-free) loss, which then uses the whole budget."""
        if self.labelled:
            return self.succeeded(logits, y)
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)

    # ------------------------------------------------------------------------- starts and proposals
    def start(self, ball: Ball, generator: torch.Generator | None) -> Tensor:
        """A run's first point, on the ball's surface up to the pixel bounds."""
        x = ball.center
        batch, channels, height, width = x.shape
        if self.norm.name == "linf":
            return ball.project(x + ball.eps * self._signs((batch, channels, 1, width), x, generator))
        side = max(height // 5, 1)
        delta = torch.zeros_like(x)
        for top in _tile_starts(height, side):
            for left in _tile_starts(width, side):
                (transpose,) = self._uniforms(1, x, generator)
                pattern = square_pattern(side, transpose < 0.5, dtype=x.dtype, device=x.device)
                delta[:, :, top : top + side, left : left + side] += pattern * self._signs(
                    (batch, channels, 1, 1), x, generator
                )
        return self._on_l2_sphere(ball, delta)

    def propose(self, ball: Ball, best: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
        """A candidate that changes ``best`` inside one random window whose area is about ``p`` of the image."""
        x = ball.center
        batch, channels, height, width = x.shape
        if self.norm.name == "linf":
            side = min(max(round(math.sqrt(p * height * width)), 1), height, width)
            top, left = self._corner(height, width, side, x, generator)
            step = torch.zeros_like(x)
            step[:, :, top : top + side, left : left + side] = (
                2 * ball.eps * self._signs((batch, channels, 1, 1), x, generator)
            )
            return ball.project(best + step)
        side = max(round(math.sqrt(p * height * width)), 3)
        side = min(side + 1 if side % 2 == 0 else side, height, width)
        top, left = self._corner(height, width, side, x, generator)
        top2, left2 = self._corner(height, width, side, x, generator)
        (transpose,) = self._uniforms(1, x, generator)
        delta = best - x
        window = delta[:, :, top : top + side, left : left + side]
        union = torch.zeros(height, width, dtype=torch.bool, device=x.device)
        union[top : top + side, left : left + side] = True
        union[top2 : top2 + side, left2 : left2 + side] = True
        moved = (delta * union).square().sum(dim=(-2, -1), keepdim=True)  # per channel, both windows
        total = per_example(self.norm.measure(delta), delta).square()
        budget = ((ball.eps.square() - total).clamp_min(0) / channels + moved).sqrt()
        pattern = square_pattern(side, transpose < 0.5, dtype=x.dtype, device=x.device)
        new = pattern * self._signs((batch, channels, 1, 1), x, generator) + window / (
            TINY + window.square().sum(dim=(-2, -1), keepdim=True).sqrt()
        )
        new = new / (TINY + new.square().sum(dim=(-2, -1), keepdim=True).sqrt()) * budget
        delta = delta.clone()
        delta[:, :, top2 : top2 + side, left2 : left2 + side] = 0
        delta[:, :, top : top + side, left : left + side] = new
        return self._on_l2_sphere(ball, delta)

    # ---------------------------------------------------------------------------------- randomness
    @staticmethod
    def _uniforms(count: int, like: Tensor, generator: torch.Generator | None) -> list[float]:
        """``count`` uniform draws in [0, 1) from ``generator``, read back to the host at once."""
        draws: list[float] = torch.rand(count, generator=generator, device=like.device).tolist()
        return draws

    def _corner(
        self, height: int, width: int, side: int, like: Tensor, generator: torch.Generator | None
    ) -> tuple[int, int]:
        """A window corner: the reference's ``int(u * (H - s))``, or uniform over all with ``every_corner``."""
        row, col = self._uniforms(2, like, generator)
        if not self.every_corner:
            return int(row * (height - side)), int(col * (width - side))
        return min(int(row * (height - side + 1)), height - side), min(int(col * (width - side + 1)), width - side)

    @staticmethod
    def _signs(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
        """Independent fair +-1 draws of ``shape`` in ``like``'s dtype and device."""
        bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return bits.to(like.dtype) * 2 - 1

    def _on_l2_sphere(self, ball: Ball, delta: Tensor) -> Tensor:
        """``x + eps * delta / ||delta||_2``, clipped to the bounds (the reference's normalization)."""
        unit = delta / (TINY + per_example(self.norm.measure(delta), delta))
        return ball.project(ball.center + ball.eps * unit)


def _tile_starts(length: int, side: int) -> range:
    """Where the L2 start's tiles begin along one axis: centred as in the reference, whole tiles only."""
    offset = max((length - 5 * side) // 2, 0)
    return range(offset, length - side + 1, side)
