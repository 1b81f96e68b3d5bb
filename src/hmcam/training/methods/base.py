"""The interface every training method implements: what to do with one minibatch.

The trainer owns data order, augmentation, the optimizer and its learning rate, distributed reduction,
evaluation, checkpoints and resume; a method owns the inner problem of Eq. (14): the examples it
trains on, the passes it makes and the tensors it carries between steps. The order of the calls,
what the trainer guarantees a method and how each method of the paper's comparison maps onto the
interface: docs/training.md, "The method interface".
"""

from __future__ import annotations

import dataclasses
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from hmcam.core.distributed import DistributedContext
from hmcam.training.examples import ExampleState


class Batch(NamedTuple):
    """One minibatch of this process, as :meth:`TrainingMethod.train_step` receives it.

    ``images`` (pixels in [0, 1]) and ``labels`` are on the training device; ``indices`` are the
    examples' positions in the training set (int64, on the CPU).
    """

    images: Tensor
    labels: Tensor
    indices: Tensor


class MethodOutput(NamedTuple):
    """What :meth:`TrainingMethod.loss` returns.

    ``loss`` is the scalar to minimize, ``logits`` the model's outputs on the examples it was
    computed from (the trainer's training accuracy counts them), ``stats`` extra per-minibatch
    means the method wants logged (for example an acceptance rate), as floats or 0-d tensors, and
    ``passes`` the full forward+backward passes spent on it (PGD-K: K + 1).
    """

    loss: Tensor
    logits: Tensor
    stats: dict[str, Tensor | float]
    passes: float = 1.0


class StepMeter:
    """What one minibatch's :meth:`TrainingMethod.train_step` reported: losses, predictions, statistics, passes.

    Sums are float64 tensors on the training device, so recording never waits for the device.
    """

    def __init__(self) -> None:
        self.loss: Tensor | None = None
        self.correct: Tensor | None = None
        self.examples = 0
        self.stats: dict[str, Tensor] = {}
        self.passes = 0.0

    def record(self, output: MethodOutput, labels: Tensor) -> None:
        """Count ``output``'s loss (weighted by the examples), its correct predictions of ``labels`` and its stats."""
        count = labels.numel()
        loss = output.loss.detach().double() * count
        correct = (output.logits.detach().argmax(dim=1) == labels).sum().double()
        self.loss = loss if self.loss is None else self.loss + loss
        self.correct = correct if self.correct is None else self.correct + correct
        self.examples += count
        for name, value in output.stats.items():
            weighted = torch.as_tensor(value, dtype=torch.float64, device=loss.device).detach() * count
            self.stats[name] = self.stats[name] + weighted if name in self.stats else weighted

    def add_passes(self, passes: float) -> None:
        """Count ``passes`` full forward+backward passes (fractions for partial ones, as YOPO's first-layer updates)."""
        if passes < 0:
            raise ValueError(f"passes must be >= 0, got {passes}")
        self.passes += float(passes)


def _no_indices() -> Tensor:
    return torch.zeros(0, dtype=torch.int64)


@dataclass(frozen=True)
class StepContext:
    """Where a minibatch (or, inside the default loop, one optimizer step) sits in training.

    ``epoch`` is 0-based; ``step`` counts the optimizer steps taken before this one over the whole
    run; ``replay`` is in ``[0, method.replays)`` (0 for the minibatch as a whole); ``indices`` holds
    the dataset indices of this process's minibatch (int64, on the CPU); ``batch`` is the
    minibatch's number in the epoch and ``batches`` their count; ``examples`` is the trainer's
    per-example store. :meth:`record` and :meth:`add_passes` report to the trainer, and :meth:`lr`
    tells the learning rate of each optimizer step of the minibatch.
    """

    epoch: int
    step: int
    replay: int = 0
    indices: Tensor = field(default_factory=_no_indices)
    batch: int = 0
    batches: int = 1
    examples: ExampleState | None = field(default=None, repr=False)
    meter: StepMeter = field(default_factory=StepMeter, repr=False, compare=False)
    schedule: Callable[[int], float] | None = field(default=None, repr=False, compare=False)

    def record(self, output: MethodOutput, labels: Tensor) -> None:
        """Report an optimizer step's output: its loss, its predictions of ``labels`` and its stats are logged."""
        self.meter.record(output, labels)

    def add_passes(self, passes: float) -> None:
        """Report ``passes`` full forward+backward passes spent on this minibatch."""
        self.meter.add_passes(passes)

    def lr(self, step: int = 0) -> float:
        """The (unscaled) learning rate the trainer sets for optimizer step ``step`` of this minibatch."""
        if self.schedule is None:
            raise RuntimeError("this StepContext was not made by a trainer; it knows no learning rate")
        return self.schedule(step)

    def for_replay(self, replay: int) -> StepContext:
        """The context of replay ``replay`` of this minibatch: the same, with ``replay`` and ``step`` advanced."""
        return dataclasses.replace(self, replay=replay, step=self.step + replay)


@dataclass(frozen=True)
class MethodSetup:
    """What a method learns in :meth:`TrainingMethod.setup`, before the trainer loads any saved state.

    ``dataset_size`` examples of ``input_shape`` ``(C, H, W)`` in ``num_classes`` classes;
    ``device`` and ``distributed`` (rank, world size, process groups) say where it runs; ``model``
    is the network (never the DistributedDataParallel wrapper); ``examples`` is the per-example
    store to register tensors in; ``batch_size`` is the global minibatch, ``process_batch`` this
    process's share, ``batches_per_epoch`` and ``epochs`` the run's length and ``seed`` its seed.
    """

    dataset_size: int
    input_shape: tuple[int, ...]
    num_classes: int
    device: torch.device
    distributed: DistributedContext
    model: nn.Module
    examples: ExampleState
    batch_size: int
    process_batch: int
    batches_per_epoch: int
    epochs: int
    seed: int


class TrainingMethod(ABC):
    """Base of every training method; subclasses set ``name`` and implement :meth:`loss` or :meth:`train_step`.

    ``adversarial`` says whether the method trains for robustness, so the trainer selects the best
    checkpoint by robust rather than clean accuracy; ``eps`` is the L-inf radius it trains against
    (None for natural training), which robust evaluation uses by default; ``replays`` is the number
    of optimizer steps it takes per minibatch (Free-m: m; CAT: T), which the learning-rate schedule
    counts. ``dataset`` names the training set so a method can take per-dataset defaults.
    """

    name: ClassVar[str]
    adversarial: ClassVar[bool] = False
    #: How many optimizer steps each minibatch is used for (Free-m: m; CAT: T).
    replays: int = 1
    eps: float | None = None

    def __init__(self, *, dataset: str | None = None) -> None:
        self.dataset = dataset

    # An optional hook, deliberately not abstract: most methods have nothing to do here.
    def setup(self, setup: MethodSetup) -> None:  # noqa: B027
        """Learn the data, device, processes and model before training; by default does nothing.

        Register per-example tensors in ``setup.examples`` here: the trainer loads saved state into
        them right after.
        """

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimizer's parameter groups for the network ``model``: one group of every parameter by default.

        A group may carry ``lr_scale``, a factor on the scheduled rate (YOPO: ``1 / m`` for all but
        the first layer), and any SGD option of its own (``weight_decay``).
        """
        return [{"params": list(model.parameters())}]

    def on_epoch_start(self, epoch: int) -> None:  # noqa: B027
        """Called before the first minibatch of ``epoch`` (0-based), also in a resumed run; does nothing by default."""

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """Called after the last minibatch of ``epoch``; returns extra metrics for the epoch's record (default none)."""
        return {}

    def train_step(self, model: nn.Module, optimizer: Optimizer, batch: Batch, context: StepContext) -> None:
        """Train on one minibatch: by default ``replays`` times loss, backward, :meth:`before_step`, step.

        Every optimizer step is reported with ``context.record`` and its passes with
        ``context.add_passes``; an override must report at least one output per minibatch.
        """
        for replay in range(self.replays):
            step = context.for_replay(replay)
            optimizer.zero_grad(set_to_none=True)
            output = self.loss(model, batch.images, batch.labels, step)
            output.loss.backward()  # type: ignore[no-untyped-call]  # Tensor.backward has no annotations
            self.before_step(model, step)
            optimizer.step()
            context.record(output, batch.labels)
            context.add_passes(output.passes)

    def loss(self, model: nn.Module, images: Tensor, labels: Tensor, context: StepContext) -> MethodOutput:
        """The loss of one optimizer step on ``images`` (pixels in [0, 1]) and ``labels``, for the default loop."""
        raise NotImplementedError(
            f"training method {type(self).__name__} must implement loss() or override train_step()"
        )

    # An optional hook, deliberately not abstract: most methods have nothing to do here.
    def before_step(self, model: nn.Module, context: StepContext) -> None:  # noqa: B027
        """Called by the default loop between ``loss.backward()`` and ``optimizer.step()``; does nothing by default."""

    def passes_per_batch(self, network: nn.Module | None = None, input_shape: tuple[int, ...] | None = None) -> float:
        """The full forward+backward passes the method plans per minibatch (natural: 1; Free-m: m; PGD-K: K + 1).

        Every method answers on a freshly built instance, before :meth:`setup`. A method whose cost
        depends on the network it trains (YOPO) measures it on ``network``, fed pixels of
        ``input_shape`` ``(C, H, W)``, when they are given, and on the network of :meth:`setup`
        otherwise; the others ignore both.
        """
        return float(self.replays)

    def epochs_for_budget(self, passes: float) -> float:
        """The epochs a budget of ``passes`` full passes per training example is worth for this method.

        A budget of 80 (80 epochs of natural training) is 10 epochs of Free-8 and about 10 of PGD-7.
        """
        if passes <= 0:
            raise ValueError(f"a budget must be positive, got {passes}")
        return passes / self.passes_per_batch()

    def hyperparameters(self) -> dict[str, Any]:
        """The method's settings as JSON-serializable values, recorded in the run's config and checkpoints."""
        return {"replays": self.replays}

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors this process carries between steps (a warm-start perturbation), saved per process."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (tensors arrive on the CPU; move them as needed).

        A method without carried tensors accepts only ``{}``.
        """
        if state:
            raise ValueError(f"training method {self.name!r} carries no state but was given {sorted(state)}")

    def shared_state_dict(self) -> dict[str, Tensor]:
        """Tensors identical on every process (a copy of the previous weights, a loss scale), saved once."""
        return {}

    def load_shared_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`shared_state_dict` returned, on every process (tensors arrive on the CPU).

        A method without shared tensors accepts only ``{}``.
        """
        if state:
            raise ValueError(f"training method {self.name!r} shares no state but was given {sorted(state)}")
