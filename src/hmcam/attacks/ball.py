"""The feasible set of an attack: the paper's N(x) (Eq. 5) intersected with the pixel bounds.

Every attack moves a point through a :class:`Ball` and nothing else: its step follows the norm's
reference step direction, optionally bound-aware (a coordinate already at a bound cannot move
further out, so it gets no share of the step), its projection keeps the point in the ball and the
bounds, and :meth:`Ball.finish` turns the float32 working point into the caller's dtype without
leaving the set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from hmcam.attacks.norms import Norm


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype perturbations are computed in: float32 at least, so bf16 / fp16 inputs keep their ball."""
    return torch.promote_types(dtype, torch.float32)


@dataclass(frozen=True)
class Ball:
    """The eps-ball around ``center`` intersected with ``bounds``, for one attack call.

    ``center`` is the clean input in the working dtype (float32 at least), ``eps`` is shaped
    [B, 1, ..., 1] and ``input_dtype`` is the caller's dtype, which :meth:`finish` returns to.
    Projecting onto the ball and then clipping to the bounds stays inside the ball, because
    clipping only moves a coordinate toward ``center``, which is in bounds. ``bound_aware_step``
    chooses whether :meth:`direction` leaves out coordinates held at a bound; None takes the
    norm's reference behaviour (:attr:`Norm.bound_aware_step`: off for L-inf and L2, on for L1).
    """

    center: Tensor
    eps: Tensor
    norm: Norm
    bounds: tuple[float, float]
    input_dtype: torch.dtype
    bound_aware_step: bool | None = None

    @property
    def masks_bounds(self) -> bool:
        """Whether :meth:`direction` leaves out the coordinates held at a pixel bound."""
        return self.norm.bound_aware_step if self.bound_aware_step is None else self.bound_aware_step

    def with_bound_aware_step(self, bound_aware_step: bool | None) -> Ball:
        """The same ball with the bound-aware step switched on or off (None: the norm's reference)."""
        return replace(self, bound_aware_step=bound_aware_step)

    def project(self, point: Tensor) -> Tensor:
        """The point of the feasible set reached by projecting onto the ball, then clipping."""
        delta = self.norm.project(point - self.center, self.eps)
        return (self.center + delta).clamp(*self.bounds)

    def random_point(self, generator: torch.Generator | None) -> Tensor:
        """A uniform draw from the ball, clipped to the bounds (the random start of PGD)."""
        return self.project(self.center + self.norm.random_start(self.center, self.eps, generator))

    def direction(self, point: Tensor, ascent: Tensor) -> Tensor:
        """The norm's step direction of ``ascent``, over the coordinates that can move when bound-aware.

        With :attr:`masks_bounds`, a coordinate sitting at a pixel bound whose ascent points outward
        would be clipped back, so it is left out: under L1 the whole step would otherwise go to that
        one pixel at every iteration and the attack would stall (Foolbox's sparse L1 descent masks
        them too, so that is the L1 default), and under L2 its share of the step would be lost (the
        reference PGD-L2 step keeps it, so that is off by default). Under L-inf the sign step of such
        a coordinate is clipped back anyway, so the result is the same either way.
        """
        if not self.masks_bounds:
            return self.norm.step_direction(ascent)
        low, high = self.bounds
        blocked = ((point <= low) & (ascent < 0)) | ((point >= high) & (ascent > 0))
        return self.norm.step_direction(ascent.masked_fill(blocked, 0))

    def step(self, point: Tensor, size: Tensor | float, ascent: Tensor) -> Tensor:
        """Move ``point`` by ``size`` along :meth:`direction` of ``ascent``, then project."""
        return self.project(point + size * self.direction(point, ascent))

    def subset(self, index: Tensor) -> Ball:
        """The ball of the examples at ``index`` (a 1-D index tensor into the batch)."""
        return replace(self, center=self.center[index], eps=self.eps[index])

    def tile(self, count: int) -> Ball:
        """The ball of ``count`` copies of the batch, copy-major: example b of copy c is row ``c * B + b``."""
        if count == 1:
            return self

        def repeat(tensor: Tensor) -> Tensor:
            return tensor.repeat(count, *([1] * (tensor.dim() - 1)))

        return replace(self, center=repeat(self.center), eps=repeat(self.eps))

    def finish(self, point: Tensor) -> Tensor:
        """``point`` in the caller's dtype, still inside the ball and the bounds.

        Rounding to the nearest bf16 / fp16 value can move a coordinate half a unit in the last
        place away from the center and out of the ball (0.0332 against eps 0.0314 in bf16); such
        coordinates are rounded toward the center instead, which never increases |x' - x| in any
        coordinate, so every L_p norm stays within eps. The center itself is representable.
        """
        if point.dtype == self.input_dtype:
            return point.detach()
        rounded = point.detach().to(self.input_dtype)
        center = self.center.to(self.input_dtype)
        outward = (rounded.to(point.dtype) - self.center).abs() > (point - self.center).abs()
        return torch.where(outward, torch.nextafter(rounded, center), rounded)
