"""Learning-rate schedules as pure functions of training progress, measured in epochs.

A schedule maps the progress ``p`` (epochs completed, fractional inside an epoch) to a learning rate,
so it has no state of its own: resuming a run at epoch ``e`` recomputes exactly the rates an
uninterrupted run would have used. The trainer evaluates it at the midpoint of each optimizer step,
``p = epoch + (k + 0.5) / steps_per_epoch``, which keeps step decays of ``multistep`` on epoch
boundaries and keeps ``cosine`` and ``cyclic`` from wasting a step at a zero rate.

- ``multistep``: ``lr * gamma ** #{milestones m : p >= m}``; the paper's schedules (section 5.1:
  PGD-AT at 5e-2 reduced 10x at epochs 79, 90, 100; Free and YOPO at 0.2 reduced at 30 and 36).
- ``cosine``: ``lr * (1 + cos(pi * p / epochs)) / 2``.
- ``cyclic``: the one-cycle triangle of Free/fast adversarial training, rising linearly from 0 to
  ``lr`` at ``peak * epochs`` and back to 0 at ``epochs``.

Any of them can start with a linear warm-up over the first ``warmup`` epochs: the rate is multiplied
by ``p / warmup`` until ``p`` reaches ``warmup``, so it climbs from almost 0 to the schedule's own
value. Adversarial training at a large rate can otherwise sit at chance accuracy for many epochs
(``docs/training.md``); the warm-up stays a function of ``p`` alone, so resume stays exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

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

    def _rate(self, progress: float) -> float:
        if self.kind == "multistep":
            return self.lr * self.gamma ** sum(progress >= m for m in self.milestones)
        if self.kind == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress / self.epochs))
        top = self.peak * self.epochs
        if progress <= top:
            return self.lr * progress / top
        return self.lr * (self.epochs - progress) / (self.epochs - top)
