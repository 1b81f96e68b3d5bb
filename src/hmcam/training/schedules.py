"""Learning-rate schedules as pure functions of training progress, measured in epochs.

``multistep``, ``cosine`` and ``cyclic``, each with an optional linear warm-up, evaluated at the
midpoint of each optimizer step; having no state, they make resume exact. :meth:`Schedule.apply`
sets every parameter group of an optimizer to the rate times the group's ``lr_scale``. The formulas
and the paper's schedules: docs/training.md, "Schedules".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from torch.optim import Optimizer

SCHEDULES = ("multistep", "cosine", "cyclic")


def resolve_milestones(milestones: Sequence[float], epochs: int) -> tuple[float, ...]:
    """Milestones in epochs: a value strictly between 0 and 1 is a fraction of ``epochs``, an integer an epoch.

    ``(0.5, 0.75)`` with 40 epochs gives ``(20.0, 30.0)``; ``(30, 36)`` stays ``(30.0, 36.0)``. Any
    other value (zero, negative, or a non-integer above 1) is ambiguous and raises ValueError.
    """
    resolved = []
    for value in milestones:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"milestones must be numbers, got {value!r}")
        if 0 < value < 1:
            resolved.append(float(value) * epochs)
        elif value >= 1 and float(value).is_integer():
            resolved.append(float(value))
        else:
            raise ValueError(f"milestone {value!r} is neither a fraction of training in (0, 1) nor a whole epoch >= 1")
    if any(b < a for a, b in pairwise(resolved)):
        raise ValueError(f"milestones must be in increasing order, got {list(milestones)}")
    return tuple(resolved)


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: call it with the progress in epochs to get the rate.

    ``milestones`` are already in epochs (see :func:`resolve_milestones`); ``gamma`` is the
    multistep decay factor, ``peak`` the fraction of training where the cyclic schedule peaks and
    ``warmup`` the epochs of linear warm-up (0: none).
    """

    kind: str
    lr: float
    epochs: int
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    peak: float = 0.4
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {SCHEDULES}")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.peak < 1:
            raise ValueError(f"the cyclic peak must be a fraction of training in (0, 1), got {self.peak}")
        if not 0 <= self.warmup <= self.epochs:
            raise ValueError(f"the warm-up must last between 0 and {self.epochs} epochs, got {self.warmup}")

    def __call__(self, progress: float) -> float:
        """The learning rate after ``progress`` epochs of training (fractional, in ``[0, epochs]``)."""
        if not 0 <= progress <= self.epochs:
            raise ValueError(f"progress must lie in [0, {self.epochs}] epochs, got {progress}")
        rate = self._rate(progress)
        if progress < self.warmup:
            rate *= progress / self.warmup
        return rate

    def apply(self, optimizer: Optimizer, progress: float) -> float:
        """Set every parameter group of ``optimizer`` to the rate at ``progress``; returns that rate.

        A group's rate is the schedule's times the group's ``lr_scale`` (default 1), so a method can
        run parts of the network at a fraction of the rate (YOPO).
        """
        rate = self(progress)
        for group in optimizer.param_groups:
            group["lr"] = rate * group.get("lr_scale", 1.0)
        return rate

    def _rate(self, progress: float) -> float:
        if self.kind == "multistep":
            return self.lr * self.gamma ** sum(progress >= m for m in self.milestones)
        if self.kind == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress / self.epochs))
        top = self.peak * self.epochs
        if progress <= top:
            return self.lr * progress / top
        return self.lr * (self.epochs - progress) / (self.epochs - top)
