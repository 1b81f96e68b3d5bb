"""The attack base: threat model, targeting, input checks and model hygiene, shared by every attack.

An attack subclass implements only :meth:`Attack.perturb`, working on a :class:`Ball` (the paper's
N(x), Eq. 5, intersected with the pixel bounds) and calling :meth:`Attack.gradient` for J(x', y) and
its input gradient; iterative attacks go through the one loop of :mod:`hmcam.attacks.loop`.
Everything a user can get wrong is checked once, before any work, with an error that names it.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

from hmcam.attacks.ball import Ball, working_dtype
from hmcam.attacks.hygiene import attack_mode
from hmcam.attacks.losses import LossFunction, get_loss
from hmcam.attacks.norms import get_norm, per_example
from hmcam.core.validate import check_flag, check_positive_float
from hmcam.models.wrappers import Ensemble

BOUNDS_TOLERANCE = 1e-6
T = TypeVar("T")


def model_dtype(model: nn.Module, fallback: torch.dtype) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer, else ``fallback``."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return fallback


class Attack(ABC):
    """Base of every attack: owns the threat model, the objective, targeting and model hygiene.

    ``attack(x, y)`` checks its inputs, puts the model in eval mode with frozen parameters (restored
    afterwards, also on error), runs :meth:`perturb` and returns detached examples on the input's
    device and dtype, inside the eps-ball (L-inf, L2 or L1) and the ``bounds``. Perturbations are
    computed in float32 at least (bf16 and fp16 inputs included) and the model is fed its own
    dtype. The objective J is the per-example ``loss`` (``"ce"``, ``"cw"`` or a callable
    ``(logits, y) -> [B]``); untargeted attacks ascend it, targeted attacks (``y`` then holds the
    target labels) ascend ``-loss``. ``seed`` makes random starts and Metropolis-Hastings draws
    reproducible, call after call. Flags such as ``targeted`` must be real bools.
    """

    #: Attacks that search for a minimal perturbation (CW) have no eps.
    uses_eps: bool = True
    #: The objective when ``loss`` is not given.
    default_loss: str = "ce"

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor | None = None,
        *,
        norm: str = "linf",
        bounds: tuple[float, float] = (0.0, 1.0),
        targeted: bool = False,
        loss: str | LossFunction | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if len(bounds) != 2 or not all(isinstance(b, (int, float)) for b in bounds) or not bounds[0] < bounds[1]:
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an integer or None, got {seed!r}")
        self.model = model
        self.norm = get_norm(norm)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.targeted = check_flag("targeted", targeted)
        self.loss = get_loss(self.default_loss if loss is None else loss)
        self.labelled = not callable(loss)
        self.seed = seed
        self.eps = self._check_eps(eps) if self.uses_eps else None

    # ----------------------------------------------------------------------------- the update rule
    @abstractmethod
    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        """Return adversarial examples inside ``ball``; the attack's own update rule."""

    # ------------------------------------------------------------------------ shared computations
    def objective(self, logits: Tensor, y: Tensor) -> Tensor:
        """The per-example objective J ascended by the attack: loss, or -loss when targeted."""
        value = self.loss(logits, y)
        return -value if self.targeted else value

    def forward(self, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and per-example objective at ``x_adv``; an ``Ensemble(mode="loss")`` sums member losses."""
        if isinstance(self.model, Ensemble) and self.model.mode == "loss":
            member_logits = self.model.member_logits(x_adv)
            objective = self.model.combine([self.objective(logits, y) for logits in member_logits])
            return self.model.combine(member_logits), objective
        logits = self.model(x_adv)
        return logits, self.objective(logits, y)

    def model_input(self, point: Tensor) -> Tensor:
        """``point`` in the dtype of the model's parameters (differentiable), e.g. bf16 for a bf16 model."""
        return point.to(model_dtype(self.model, point.dtype))

    def evaluate(self, point: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and objective at ``point`` without a graph, the model fed in its own dtype."""
        with torch.no_grad():
            logits, objective = self.forward(self.model_input(point), y)
        return logits.to(point.dtype), objective.to(point.dtype)

    def gradient(self, point: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Objective [B], logits and input gradient of the summed per-example objective at ``point``.

        The model is fed ``point`` in its own dtype; the results come back in ``point``'s dtype.
        """
        fed = self.model_input(point.detach()).requires_grad_(True)
        logits, objective = self.forward(fed, y)
        (grad,) = torch.autograd.grad(objective.sum(), fed)
        return objective.detach().to(point.dtype), logits.detach().to(point.dtype), grad.to(point.dtype)

    def succeeded(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per-example success: prediction differs from ``y`` (untargeted) or equals it (targeted)."""
        hit = logits.argmax(dim=1) == y
        return hit if self.targeted else ~hit

    # ------------------------------------------------------------------------------ entry point
    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for ``x`` (labels, or targets when targeted, in ``y``)."""
        return self.guarded(x, y, lambda ball, labels, generator: ball.finish(self.perturb(ball, labels, generator)))

    def guarded(self, x: Tensor, y: Tensor, body: Callable[[Ball, Tensor, torch.Generator | None], T]) -> T:
        """Check the inputs, then run ``body(ball, y, generator)`` with the model in attack mode."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "attacks need input gradients, which torch.inference_mode() disables; call the attack outside "
                "it (torch.no_grad() is fine: attacks re-enable gradients for the input only)"
            )
        ball, y = self.prepare(x, y)
        with attack_mode(self.model):
            self._check_model(ball.center, y)
            return body(ball, y, self.generator(x.device))

    def prepare(self, x: Tensor, y: Tensor | None) -> tuple[Ball, Tensor]:
        """Check ``x`` and ``y`` and build the feasible set; the caller's tensors are never modified."""
        if y is None and self.targeted:
            raise ValueError("a targeted attack needs the target labels as y")
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(f"x and y must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor of pixels, got dtype {x.dtype}")
        if x.dim() < 2 or x.shape[0] == 0:
            raise ValueError(f"x must have a batch dimension [B, ...] with B >= 1, got shape {tuple(x.shape)}")
        if y.dim() == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"y must have one entry per example: x has batch {x.shape[0]}, y has shape {tuple(y.shape)}"
            )
        if y.device != x.device:
            raise ValueError(f"x is on {x.device} but y is on {y.device}")
        if self.labelled and (y.dim() != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8)):
            raise TypeError(f"labels must be a 1-D integer tensor, got dtype {y.dtype} and shape {tuple(y.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or Inf")
        low, high = self.bounds
        if x.min() < low - BOUNDS_TOLERANCE or x.max() > high + BOUNDS_TOLERANCE:
            raise ValueError(
                f"x has values in [{x.min().item():.4g}, {x.max().item():.4g}], outside the bounds {self.bounds}; "
                "attacks work in pixel space: wrap a model trained on normalized inputs with hmcam.Normalize"
            )
        center = x.detach().to(working_dtype(x.dtype)).clamp(low, high)
        eps = self._eps_tensor(center)
        ball = Ball(center=center, eps=eps, norm=self.norm, bounds=self.bounds, input_dtype=x.dtype)
        return ball, (y.long() if self.labelled else y)

    def generator(self, device: torch.device) -> torch.Generator | None:
        """A fresh generator seeded with ``seed`` (same draws every call), or None for the global RNG."""
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.seed)

    # ------------------------------------------------------------------------------- validation
    def _check_eps(self, eps: float | Tensor | None) -> float | Tensor:
        if eps is None:
            raise ValueError(f"{type(self).__name__} needs eps, the radius of the threat model's ball")
        if isinstance(eps, Tensor):
            if eps.dim() != 1 or not eps.is_floating_point():
                raise ValueError(
                    f"a per-example eps must be a 1-D float tensor, got shape {tuple(eps.shape)}, dtype {eps.dtype}"
                )
            if not torch.isfinite(eps).all() or (eps <= 0).any():
                raise ValueError("every per-example eps must be a finite number > 0")
            return eps.detach()
        return check_positive_float("eps", eps)

    def _eps_tensor(self, center: Tensor) -> Tensor:
        batch, dims = center.shape[0], center[0].numel()
        if self.eps is None:
            eps = torch.full((batch,), math.inf, device=center.device, dtype=center.dtype)
        elif isinstance(self.eps, Tensor):
            if self.eps.shape[0] != batch:
                raise ValueError(f"per-example eps has {self.eps.shape[0]} entries but the batch has {batch}")
            eps = self.eps.to(device=center.device, dtype=center.dtype)
        else:
            eps = torch.full((batch,), self.eps, device=center.device, dtype=center.dtype)
        largest = self.norm.diameter(self.bounds[1] - self.bounds[0], dims)
        if self.eps is not None and float(eps.max()) > largest * (1 + 1e-6):
            raise ValueError(
                f"eps {float(eps.max()):.4g} is larger than the widest {self.norm.name} perturbation "
                f"the bounds {self.bounds} allow ({largest:.4g})"
            )
        return per_example(eps, center)

    def _check_model(self, x: Tensor, y: Tensor) -> None:
        reference: Tensor | None = next(self.model.parameters(), None)
        if reference is None:
            reference = next(self.model.buffers(), None)
        if reference is not None and reference.device != x.device:
            raise ValueError(f"the model is on {reference.device} but the input is on {x.device}")
        with torch.no_grad():
            probe = self.model(self.model_input(x[:1]))
        if not isinstance(probe, Tensor) or probe.shape[0] != 1:
            raise ValueError(
                f"the model must return a [B, ...] tensor, got {type(probe).__name__} {getattr(probe, 'shape', '')}"
            )
        if not self.labelled:
            return
        if probe.dim() != 2:
            raise ValueError(f"the model must return [B, classes] logits, got shape {tuple(probe.shape)}")
        classes = probe.shape[1]
        if y.min() < 0 or y.max() >= classes:
            raise ValueError(
                f"labels must lie in [0, {classes - 1}] for a {classes}-class model, "
                f"got [{int(y.min())}, {int(y.max())}]"
            )
