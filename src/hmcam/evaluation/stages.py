"""The stages a chunk of examples goes through in a robust evaluation, one class each.

Every stage owns three things: which examples of the chunk it attacks (:meth:`Stage.select`), the
attack it runs (:meth:`Stage.attack`) and what it records in the
:class:`~hmcam.evaluation.state.EvaluationState` (:meth:`Stage.record`). :func:`plan` lists them for
a configuration: the clean pass, each attack's runs in the cascade, the standalone completions, and
the two gradient-masking checks (half the steps, transfer from a source model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks import Attack
from hmcam.evaluation.config import EvaluationConfig
from hmcam.evaluation.metrics import predict
from hmcam.evaluation.runner import Outcome, attack_and_verify, derive_seed
from hmcam.evaluation.state import EvaluationState


@dataclass(frozen=True)
class Chunk:
    """One fixed chunk of the examples, ``[low, high)``, with what every stage needs to select from it.

    ``correct`` and ``checked`` are CPU bool masks over the chunk: clean-correct examples, and those
    among the first ``check_examples`` (the masking checks' subset).
    """

    index: int
    low: int
    high: int
    correct: Tensor
    checked: Tensor


@dataclass(frozen=True)
class Models:
    """The attacked model and the transfer source (None when there is none)."""

    model: nn.Module
    source: nn.Module | None


@dataclass(frozen=True)
class Stage(ABC):
    """One step of a chunk's evaluation; ``attack`` indexes the run order and ``restart`` counts runs."""

    kind: ClassVar[str]
    attack: int = -1
    restart: int = 0

    def label(self, attacks: Sequence[str]) -> str:
        """A readable, stable name of the stage (also an input of its seed)."""
        return f"{self.kind}:{attacks[self.attack]}:{self.restart}"

    @abstractmethod
    def run(
        self, config: EvaluationConfig, state: EvaluationState, chunk: Chunk, models: Models, x: Tensor, y: Tensor
    ) -> int:
        """Do the stage on ``chunk`` (``x``, ``y``: its examples on the device); returns the gradients spent."""


@dataclass(frozen=True)
class CleanStage(Stage):
    """The clean pass: the model's prediction on every example of the chunk."""

    kind: ClassVar[str] = "clean"

    @override
    def label(self, attacks: Sequence[str]) -> str:
        return self.kind

    @override
    def run(
        self, config: EvaluationConfig, state: EvaluationState, chunk: Chunk, models: Models, x: Tensor, y: Tensor
    ) -> int:
        prediction = predict(models.model, x, batch_size=max(1, x.shape[0])).cpu()
        state.clean_prediction[chunk.low : chunk.high] = prediction
        state.adversarial_prediction[chunk.low : chunk.high] = prediction
        return 0


@dataclass(frozen=True)
class AttackStage(Stage):
    """A stage that attacks some examples of the chunk: its selection, its attack and what it records."""

    @abstractmethod
    def select(self, state: EvaluationState, chunk: Chunk) -> Tensor:
        """Which examples of ``chunk`` the stage attacks (a CPU bool mask over the chunk)."""

    @abstractmethod
    def build(self, config: EvaluationConfig, models: Models, seed: int) -> Attack:
        """The stage's attack, seeded with ``seed``."""

    @abstractmethod
    def record(self, state: EvaluationState, index: Tensor, outcome: Outcome) -> None:
        """Store ``outcome`` for the examples ``index`` (global positions)."""

    def judge(self, models: Models) -> nn.Module | None:
        """The model that decides whether an example is fooled (None: the attacked model)."""
        return None

    @override
    def run(
        self, config: EvaluationConfig, state: EvaluationState, chunk: Chunk, models: Models, x: Tensor, y: Tensor
    ) -> int:
        local = self.select(state, chunk).nonzero().squeeze(1)
        if local.numel() == 0:
            return 0
        on_device = local.to(x.device)
        seed = derive_seed(config.seed, chunk.index, self.label(config.attacks))
        attack = self.build(config, models, seed)
        outcome = attack_and_verify(attack, x[on_device], y[on_device], target=self.judge(models))
        self.record(state, local + chunk.low, outcome)
        return outcome.gradients


@dataclass(frozen=True)
class CascadeStage(AttackStage):
    """Run ``restart`` of attack ``attack`` on the examples that are correct and no attack has fooled yet."""

    kind: ClassVar[str] = "attack"

    @override
    def select(self, state: EvaluationState, chunk: Chunk) -> Tensor:
        # Attacks later in the order have not run on this chunk yet, so their columns are all -1.
        return chunk.correct & (state.cascade_restart[:, chunk.low : chunk.high] < 0).all(dim=0)

    @override
    def build(self, config: EvaluationConfig, models: Models, seed: int) -> Attack:
        return config.specs[self.attack].build(models.model, eps=config.eps, norm=config.norm, seed=seed)

    @override
    def record(self, state: EvaluationState, index: Tensor, outcome: Outcome) -> None:
        hit = index[outcome.fooled]
        if self.restart == 0:
            state.reached[self.attack, index] = True
        state.cascade_restart[self.attack, hit] = self.restart
        state.adversarial_prediction[hit] = outcome.prediction[outcome.fooled]
        state.perturbation[hit] = outcome.perturbation[outcome.fooled]


@dataclass(frozen=True)
class CompletionStage(CascadeStage):
    """The same run of an attack on the examples an earlier attack fooled, for its standalone accuracy."""

    kind: ClassVar[str] = "complete"
    standalone: bool = False

    @override
    def select(self, state: EvaluationState, chunk: Chunk) -> Tensor:
        scope = chunk.correct & ~state.reached[self.attack, chunk.low : chunk.high]
        if not self.standalone:
            scope &= chunk.checked
        return scope & (state.standalone_restart[self.attack, chunk.low : chunk.high] < 0)

    @override
    def record(self, state: EvaluationState, index: Tensor, outcome: Outcome) -> None:
        if self.restart == 0:
            state.standalone_tried[self.attack, index] = True
        state.standalone_restart[self.attack, index[outcome.fooled]] = self.restart


@dataclass(frozen=True)
class HalfStepsStage(AttackStage):
    """The masking check's run of an iterative attack with half its steps, on the check subset."""

    kind: ClassVar[str] = "half"

    @override
    def select(self, state: EvaluationState, chunk: Chunk) -> Tensor:
        return chunk.correct & chunk.checked

    @override
    def build(self, config: EvaluationConfig, models: Models, seed: int) -> Attack:
        assert config.half is not None  # plan() adds this stage only then
        return config.half.build(models.model, eps=config.eps, norm=config.norm, seed=seed)

    @override
    def record(self, state: EvaluationState, index: Tensor, outcome: Outcome) -> None:
        state.half_tried[index] = True
        state.half_fooled[index[outcome.fooled]] = True


@dataclass(frozen=True)
class TransferStage(AttackStage):
    """The masking check's transfer attack: crafted on the source model, judged by the evaluated one."""

    kind: ClassVar[str] = "transfer"

    @override
    def label(self, attacks: Sequence[str]) -> str:
        return self.kind

    @override
    def select(self, state: EvaluationState, chunk: Chunk) -> Tensor:
        return chunk.correct & chunk.checked

    @override
    def build(self, config: EvaluationConfig, models: Models, seed: int) -> Attack:
        assert config.transfer is not None and models.source is not None  # plan() adds this stage only then
        # No early exit: the source model's mistakes are not what counts.
        return config.transfer.build(models.source, eps=config.eps, norm=config.norm, seed=seed)

    @override
    def judge(self, models: Models) -> nn.Module | None:
        return models.model

    @override
    def record(self, state: EvaluationState, index: Tensor, outcome: Outcome) -> None:
        state.transfer_tried[index] = True
        state.transfer_fooled[index[outcome.fooled]] = True


def plan(config: EvaluationConfig) -> list[Stage]:
    """The stages every chunk goes through, in order."""
    stages: list[Stage] = [CleanStage()]
    for index, runs in enumerate(config.runs):
        stages += [CascadeStage(index, restart) for restart in range(runs)]
    if config.standalone or config.check_examples > 0:
        # The first attack reached every correctly classified example; there is nothing to complete.
        for index, runs in enumerate(config.runs[1:], start=1):
            stages += [CompletionStage(index, restart, config.standalone) for restart in range(runs)]
    if config.check_examples > 0 and config.half is not None:
        stages.append(HalfStepsStage(config.attacks.index(config.half.label)))
    if config.check_examples > 0 and config.transfer is not None:
        stages.append(TransferStage())
    return stages
