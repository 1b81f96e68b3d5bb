"""The interface every training method implements: turn a minibatch into the loss to minimize.

The trainer owns everything a method should not care about (data order, optimizer, schedule,
distributed reduction, evaluation, checkpoints); a method owns the inner problem of Eq. (14), the
examples it trains on and any tensors it carries between steps. For each minibatch the trainer runs
``replays`` optimizer steps, each one::

    output = method.loss(model, images, labels, context)   # forward (and any attack)
    output.loss.backward()
    method.before_step(model, context)                     # weights still at their pre-step value
    optimizer.step()

Designed for the methods the paper compares (section 5.1, Tables 4-7):

- Free-m replays each minibatch ``replays = m`` times and carries its perturbation from one replay
  and one minibatch to the next; it reads the input gradient of the same backward pass in
  :meth:`TrainingMethod.before_step` and keeps the perturbation in :meth:`TrainingMethod.state_dict`.
- CAT (Algorithm 3) replays a minibatch ``T`` times, carrying its chains theta^K and momenta v
  (``context.replay`` says when to start them, ``context.indices`` which examples they belong to)
  and needs the previous weights omega~: the update ``omega~ <- omega; omega <- omega - kappa g``
  means omega~ is a copy of the weights taken in :meth:`TrainingMethod.before_step`.
- YOPO works on the first layer: ``unwrap_model(model)`` (from :mod:`hmcam.training.distributed`)
  is the network itself, whose first layer a method can reach or hook; forward hooks registered on it
  also fire when the trainer calls the DistributedDataParallel wrapper.

``model`` is what the trainer optimizes, possibly a DistributedDataParallel wrapper: the forward
pass whose loss is returned must go through it so gradients are synchronized, while attacks must run
on ``unwrap_model(model)`` (no gradient synchronization, no parameter gradients).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from torch import Tensor, nn


@dataclass(frozen=True)
class StepContext:
    """Where an optimizer step sits in training, handed to every method call of that step.

    ``epoch`` is 0-based, ``step`` counts the optimizer steps taken before this one over the whole
    run, ``replay`` is in ``[0, method.replays)`` and ``indices`` holds the dataset indices of this
    process's minibatch (int64, on the CPU).
    """

    epoch: int
    step: int
    replay: int
    indices: Tensor


class MethodOutput(NamedTuple):
    """What :meth:`TrainingMethod.loss` returns.

    ``loss`` is the scalar to minimize, ``logits`` the model's outputs on the examples it was
    computed from (the trainer's training accuracy counts them) and ``stats`` extra per-minibatch
    means the method wants logged (for example an acceptance rate), as floats or 0-d tensors.
    """

    loss: Tensor
    logits: Tensor
    stats: dict[str, Tensor | float]


class TrainingMethod(ABC):
    """Base of every training method; subclasses set ``name`` and implement :meth:`loss`.

    ``adversarial`` says whether the method trains for robustness, so the trainer selects the best
    checkpoint by robust rather than clean accuracy; ``eps`` is the L-inf radius it trains against
    (None for natural training), which robust evaluation uses by default. ``dataset`` names the
    training set so a method can take per-dataset defaults.
    """

    name: ClassVar[str]
    adversarial: ClassVar[bool] = False
    #: How many optimizer steps each minibatch is used for (Free-m: m; CAT: T).
    replays: int = 1
    eps: float | None = None

    def __init__(self, *, dataset: str | None = None) -> None:
        self.dataset = dataset

    @abstractmethod
    def loss(self, model: nn.Module, images: Tensor, labels: Tensor, context: StepContext) -> MethodOutput:
        """The loss of one optimizer step on ``images`` (pixels in [0, 1]) and ``labels``."""

    # An optional hook, deliberately not abstract: most methods have nothing to do here.
    def before_step(self, model: nn.Module, context: StepContext) -> None:  # noqa: B027
        """Called after ``loss.backward()`` and before ``optimizer.step()``; by default does nothing."""

    def hyperparameters(self) -> dict[str, Any]:
        """The method's settings as JSON-serializable values, recorded in the run's config and checkpoints."""
        return {"replays": self.replays}

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors carried between steps (chains, perturbations), saved with every trainer state."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (tensors arrive on the CPU; move them as needed).

        A method without carried tensors accepts only ``{}``.
        """
        if state:
            raise ValueError(f"training method {self.name!r} carries no state but was given {sorted(state)}")
