"""The paper's neighbourhoods N(x) = {x' : ||x' - x||_p <= eps} for p in {inf, 2, 1} (Eq. 5).

Each norm supplies the operations every attack needs: the exact Euclidean projection of a
perturbation onto the eps-ball, a uniform random start inside the ball, the steepest-ascent
direction of a gradient (the unit vector of the norm that maximizes <g, d>, i.e. the dual map) and
the direction an iterative attack steps along, which equals it except under L1.
All operations are batched: ``delta`` is [B, ...] and ``eps`` a tensor broadcastable to it
([B, 1, ..., 1]), so a per-example eps costs nothing extra.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor
from typing_extensions import override

TINY = 1e-12


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def per_example(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a [B] tensor to [B, 1, ..., 1] so it broadcasts against ``like``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


class Norm(ABC):
    """An L_p threat model: measure, project, sample and steepest-ascent direction."""

    name: str
    #: Whether the reference step of this norm leaves out coordinates held at a pixel bound (see
    #: :meth:`hmcam.attacks.ball.Ball.direction`): False for L-inf and L2 (Madry et al.'s PGD,
    #: torchattacks' PGD / PGDL2), True for L1 (Foolbox's ``SparseL1DescentAttack``).
    bound_aware_step: bool = False

    @abstractmethod
    def measure(self, delta: Tensor) -> Tensor:
        """Per-example norm of ``delta``, shape [B]."""

    @abstractmethod
    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        """The closest point to ``delta`` (in L2) inside the eps-ball."""

    @abstractmethod
    def random_start(self, like: Tensor, eps: Tensor, generator: torch.Generator | None) -> Tensor:
        """A perturbation drawn uniformly from the eps-ball, shaped like ``like``."""

    @abstractmethod
    def direction(self, grad: Tensor) -> Tensor:
        """The unit-norm direction of steepest ascent for ``grad`` (zero where ``grad`` is zero)."""

    def step_direction(self, grad: Tensor) -> Tensor:
        """The unit-norm direction an iterative attack steps along: the steepest ascent by default."""
        return self.direction(grad)

    @abstractmethod
    def diameter(self, span: float, dims: int) -> float:
        """The largest norm a perturbation can have inside a box of side ``span`` in ``dims`` dimensions."""


class LinfNorm(Norm):
    """L-infinity: clamp, uniform noise in the cube, and the sign of the gradient (FGSM's direction)."""

    name = "linf"

    @override
    def measure(self, delta: Tensor) -> Tensor:
        return _flat(delta).abs().amax(dim=1)

    @override
    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(delta, eps), -eps)

    @override
    def random_start(self, like: Tensor, eps: Tensor, generator: torch.Generator | None) -> Tensor:
        noise = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return (2 * noise - 1) * eps

    @override
    def direction(self, grad: Tensor) -> Tensor:
        return grad.sign()

    @override
    def diameter(self, span: float, dims: int) -> float:
        return span


class L2Norm(Norm):
    """L2: radial rescaling, uniform sampling in the ball, and the normalized gradient."""

    name = "l2"

    @override
    def measure(self, delta: Tensor) -> Tensor:
        return _flat(delta).square().sum(dim=1).sqrt()

    @override
    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        norms = per_example(self.measure(delta), delta)
        return delta * torch.clamp(eps / norms.clamp_min(TINY), max=1.0)

    @override
    def random_start(self, like: Tensor, eps: Tensor, generator: torch.Generator | None) -> Tensor:
        # A uniform point in the d-ball: isotropic direction, radius distributed as U^(1/d).
        gaussian = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        unit = gaussian / per_example(self.measure(gaussian).clamp_min(TINY), like)
        dims = _flat(like).shape[1]
        radius = torch.rand(like.shape[0], generator=generator, device=like.device, dtype=like.dtype)
        return unit * per_example(radius ** (1.0 / dims), like) * eps

    @override
    def direction(self, grad: Tensor) -> Tensor:
        return grad / per_example(self.measure(grad).clamp_min(TINY), grad)

    @override
    def diameter(self, span: float, dims: int) -> float:
        return span * math.sqrt(dims)


class L1Norm(Norm):
    """L1: exact simplex projection (Duchi et al. 2008), uniform sampling, sparse steepest ascent.

    The steepest-ascent direction under L1 puts the whole unit budget on the coordinate with the
    largest |gradient| (ties share it equally); that is the exact dual map. An iterative attack that
    follows it changes one pixel a step, and a pixel that saturates at a bound keeps winning; so
    attacks step along :meth:`step_direction` instead, the sign of the top ``sparsity`` fraction of
    coordinates by |gradient| with the unit budget shared equally (SLIDE, Tramer & Boneh 2019, whose
    99th-percentile rule is ``sparsity=0.01``; ties at the threshold are all included).
    """

    name = "l1"
    bound_aware_step = True

    def __init__(self, sparsity: float = 0.01) -> None:
        if not 0 < sparsity <= 1:
            raise ValueError(f"sparsity must lie in (0, 1], got {sparsity!r}")
        self.sparsity = sparsity

    @override
    def measure(self, delta: Tensor) -> Tensor:
        return _flat(delta).abs().sum(dim=1)

    @override
    def project(self, delta: Tensor, eps: Tensor) -> Tensor:
        flat = _flat(delta)
        radius = eps.reshape(-1, 1).expand(flat.shape[0], 1)
        magnitude = flat.abs()
        inside = magnitude.sum(dim=1, keepdim=True) <= radius
        # Find the threshold tau with sum(max(|x| - tau, 0)) = eps by sorting (exact, O(d log d)).
        ordered, _ = magnitude.sort(dim=1, descending=True)
        cumulative = ordered.cumsum(dim=1) - radius
        index = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
        feasible = ordered - cumulative / index > 0
        count = feasible.to(flat.dtype).cumsum(dim=1).argmax(dim=1, keepdim=True)
        tau = cumulative.gather(1, count) / (count + 1).to(flat.dtype)
        shrunk = flat.sign() * (magnitude - tau).clamp_min(0)
        return torch.where(inside, flat, shrunk).reshape(delta.shape)

    @override
    def random_start(self, like: Tensor, eps: Tensor, generator: torch.Generator | None) -> Tensor:
        # d+1 i.i.d. exponentials normalized by their sum are Dirichlet(1, ..., 1); dropping the last
        # coordinate gives a uniform point of {u >= 0, sum u <= 1}; random signs fill the cross-polytope.
        flat = _flat(like)
        shape = (flat.shape[0], flat.shape[1] + 1)
        uniform = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
        exponential = -torch.log1p(-uniform)
        simplex = (exponential / exponential.sum(dim=1, keepdim=True))[:, :-1]
        signs = torch.randint(0, 2, flat.shape, generator=generator, device=like.device).to(like.dtype) * 2 - 1
        return (simplex * signs).reshape(like.shape) * eps

    @override
    def direction(self, grad: Tensor) -> Tensor:
        flat = _flat(grad)
        magnitude = flat.abs()
        top = magnitude.amax(dim=1, keepdim=True)
        winners = (magnitude == top) & (top > 0)
        share = winners.to(grad.dtype) / winners.sum(dim=1, keepdim=True).clamp_min(1)
        return (flat.sign() * share).reshape(grad.shape)

    @override
    def step_direction(self, grad: Tensor) -> Tensor:
        flat = _flat(grad)
        magnitude = flat.abs()
        count = max(1, math.ceil(self.sparsity * flat.shape[1]))
        threshold = magnitude.topk(count, dim=1).values[:, -1:]
        chosen = (magnitude >= threshold) & (magnitude > 0)
        share = chosen.to(grad.dtype) / chosen.sum(dim=1, keepdim=True).clamp_min(1)
        return (flat.sign() * share).reshape(grad.shape)

    @override
    def diameter(self, span: float, dims: int) -> float:
        return span * dims


NORMS: dict[str, Norm] = {norm.name: norm for norm in (LinfNorm(), L2Norm(), L1Norm())}


def get_norm(name: str) -> Norm:
    """Look up a norm by name (``"linf"``, ``"l2"`` or ``"l1"``)."""
    if not isinstance(name, str) or name.lower() not in NORMS:
        raise ValueError(f"unknown norm {name!r}; choose one of {sorted(NORMS)}")
    return NORMS[name.lower()]
