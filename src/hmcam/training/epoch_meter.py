"""The training metrics of one epoch: what every minibatch reported, summed over the epoch and the processes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hmcam.core.distributed import DistributedContext, all_reduce_sum
from hmcam.training.methods import StepMeter


class EpochMeter:
    """Sums the :class:`~hmcam.training.methods.StepMeter` of each minibatch of an epoch on ``device``.

    The sums stay on the device until :meth:`summary`, so counting never waits for it.
    """

    def __init__(self, device: torch.device) -> None:
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)  # examples, loss sum, correct
        self.stats: dict[str, Tensor] = {}
        self.passes = 0.0

    def add(self, meter: StepMeter) -> None:
        """Count one minibatch: its examples, loss, correct predictions, statistics and passes."""
        if meter.loss is None or meter.correct is None:
            raise ValueError("a minibatch that reported no output cannot be counted")
        self.totals += torch.stack([self.totals.new_tensor(meter.examples), meter.loss, meter.correct])
        for name, value in meter.stats.items():
            self.stats[name] = self.stats[name] + value if name in self.stats else value
        self.passes += meter.passes

    def summary(self, context: DistributedContext) -> dict[str, Any]:
        """The epoch over every process: ``train_loss``, ``train_accuracy``, ``passes`` and ``train_<stat>`` means.

        Every process must call it (an all-reduce); each gets the same values.
        """
        names = sorted(self.stats)
        local = torch.cat(
            [self.totals, self.totals.new_tensor([self.passes]), *(self.stats[n].reshape(1) for n in names)]
        )
        summed = all_reduce_sum(local, context).tolist()
        examples = summed[0]
        return {
            "train_loss": summed[1] / examples,
            "train_accuracy": summed[2] / examples,
            # Every process makes the same passes over its share of each global minibatch.
            "passes": summed[3] / context.world_size,
            **{f"train_{name}": value / examples for name, value in zip(names, summed[4:], strict=True)},
        }
