"""The trainer's optimizer: SGD that sets the scheduled learning rate itself, at the start of every step.

A training method calls ``optimizer.step()`` itself, as many times per minibatch as it declares
(``replays``: Free-m and CAT step several times), so the rate is set where the step is taken:
:meth:`ScheduledSGD.step` applies the schedule at the step's point of training
(:meth:`hmcam.training.schedules.Schedule.apply`), then steps. The trainer only says which minibatch
comes next (:meth:`ScheduledSGD.start_batch`) and reads back how many steps it took;
:func:`build_optimizer` builds it for a run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, overload

import torch
from torch import nn

from hmcam.training.config import TrainConfig
from hmcam.training.methods import TrainingMethod
from hmcam.training.schedules import Schedule, resolve_milestones


class ScheduledSGD(torch.optim.SGD):
    """SGD over ``groups`` whose every step runs at the rate ``schedule`` gives it.

    Step ``k`` of minibatch ``b`` in epoch ``e`` gets ``schedule(e + (b R + k + 0.5) / (B R))``, with
    ``R = replays`` steps per minibatch and ``B = batches_per_epoch``, times the group's
    ``lr_scale``; a step beyond ``replays`` is an error naming ``method``. The state dict is
    plain SGD's, so checkpoints do not depend on this class.
    """

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        schedule: Schedule,
        *,
        method: str,
        replays: int,
        batches_per_epoch: int,
        momentum: float,
        weight_decay: float,
    ) -> None:
        super().__init__(groups, lr=schedule.lr, momentum=momentum, weight_decay=weight_decay)
        self.schedule = schedule
        self.method = method
        self.replays = replays
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0
        self.batch = 0
        #: The optimizer steps taken on the current minibatch.
        self.steps_taken = 0
        #: The (unscaled) rate of the last step taken: the schedule's start before any.
        self.last_rate = schedule.lr

    def progress(self, epoch: int, batch: int, step: int = 0) -> float:
        """The point of training, in epochs, at the middle of step ``step`` of minibatch ``batch`` in ``epoch``."""
        steps = self.batches_per_epoch * self.replays
        return epoch + (batch * self.replays + step + 0.5) / steps

    def rate(self, epoch: int, batch: int, step: int = 0) -> float:
        """The (unscaled) rate of step ``step`` of minibatch ``batch`` in ``epoch``: what ``context.lr`` tells."""
        return self.schedule(self.progress(epoch, batch, step))

    def start_batch(self, epoch: int, batch: int) -> None:
        """Make minibatch ``batch`` of ``epoch`` (0-based) the current one, with no step taken yet."""
        self.epoch, self.batch, self.steps_taken = epoch, batch, 0

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Set the scheduled rate of the next step of the current minibatch, then take the SGD step."""
        if self.steps_taken >= self.replays:
            raise RuntimeError(
                f"training method {self.method!r} took more than its replays = {self.replays} "
                f"optimizer steps on one minibatch; set replays to the steps it takes, so the schedule counts them"
            )
        self.last_rate = self.schedule.apply(self, self.progress(self.epoch, self.batch, self.steps_taken))
        loss: float | None = super().step(closure)
        self.steps_taken += 1
        return loss


def build_optimizer(
    config: TrainConfig, method: TrainingMethod, network: nn.Module, batches_per_epoch: int
) -> ScheduledSGD:
    """The optimizer of the run of ``config``: SGD over ``method``'s parameter groups of ``network``, scheduled."""
    milestones = resolve_milestones(config.milestones, config.epochs)
    schedule = Schedule(
        config.schedule, config.lr, config.epochs, milestones, config.gamma, config.cyclic_peak, config.warmup_epochs
    )
    return ScheduledSGD(
        method.parameter_groups(network),
        schedule,
        method=method.name,
        replays=method.replays,
        batches_per_epoch=batches_per_epoch,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
