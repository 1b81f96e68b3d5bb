"""The trainer state: what ``state.safetensors`` holds so that a killed run resumes exactly.

:class:`TrainerState` is the weights, the optimizer's state, every process's random streams and
method state (:class:`ProcessState`), the method's shared state and per-example store, the epoch,
step, history and best result. :meth:`TrainerState.to_tensors` lays it out as the file stores it
(tensors plus JSON metadata, no pickle) and :meth:`TrainerState.from_tensors` reads it back,
refusing a file that is not a trainer state or is damaged; :meth:`TrainerState.validate` checks it
against the run that wants to resume and :meth:`TrainerState.restore` loads it into that run.

The file's tensors are named ``model.*`` (the network), ``optimizer.state.*``
(:func:`hmcam.training.state.optimizer_state_to_tensors`), ``rank{r}.rng.*`` and
``rank{r}.method.*`` (process ``r``), ``shared.*`` and ``examples.*``; its metadata holds
``format``, ``format_version``, ``config``, ``epoch``, ``step``, ``world_size``, ``schedule``,
``optimizer`` (the JSON skeleton), ``ranks`` (each process's RNG scalars), ``history`` and ``best``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer

from hmcam.core.storage import load_tensors, save_tensors
from hmcam.training.config import RESUMABLE_CHANGES, TrainConfig
from hmcam.training.examples import ExampleState
from hmcam.training.methods import TrainingMethod
from hmcam.training.state import (
    capture_rng,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    pack,
    restore_rng,
    unpack,
)

STATE_FORMAT = "hmcam-trainer-state"
STATE_VERSION = 1
MODEL_PREFIX = "model."
METHOD_PREFIX = "method."
SHARED_PREFIX = "shared."
EXAMPLES_PREFIX = "examples."
RNG_PREFIX = "rng."
#: The RNG tensors every process's state must hold (CUDA devices add ``rng.cuda.*``).
RNG_TENSORS = ("rng.torch", "rng.numpy", "rng.python")
#: What :meth:`TrainerState.restore` turns into "damaged or does not match this run".
LOAD_ERRORS = (KeyError, IndexError, TypeError, ValueError, RuntimeError)


def prefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` with ``prefix`` put before every name."""
    return {prefix + name: tensor for name, tensor in tensors.items()}


def unprefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors whose names start with ``prefix``, with the prefix taken off."""
    return {name[len(prefix) :]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}


def _rank_prefix(rank: int) -> str:
    return f"rank{rank}."


def _unusable(source: str | os.PathLike[str], error: Exception) -> ValueError:
    return ValueError(f"{source} is damaged or does not match this run: {type(error).__name__}: {error}")


def _damaged(source: str | os.PathLike[str], what: str) -> ValueError:
    return ValueError(f"{source} is damaged or not an hmcam trainer state: {what}")


class _Damaged(ValueError):
    """A damaged state; :meth:`TrainerState.from_tensors` names the file before the message."""


def _entry(metadata: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``metadata[key]``, which must be present and of JSON type ``kind`` (a bool is never an int)."""
    if key not in metadata:
        raise _Damaged(f"its metadata lacks {key!r}")
    value = metadata[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Damaged(f"metadata {key!r} has the wrong type ({type(value).__name__})")
    return value


@dataclass
class ProcessState:
    """One process's share of the trainer state: its random streams and its method's per-process tensors.

    ``rng`` holds :func:`~hmcam.training.state.capture_rng`'s tensors (named ``rng.*``) and
    ``rng_meta`` its JSON scalars; ``method`` is :meth:`TrainingMethod.state_dict`.
    """

    rng: dict[str, Tensor]
    rng_meta: dict[str, Any]
    method: dict[str, Tensor]

    @classmethod
    def capture(cls, method: TrainingMethod) -> ProcessState:
        """The calling process's random streams and ``method``'s per-process tensors, as they are now."""
        rng, rng_meta = capture_rng()
        return cls(rng, rng_meta, method.state_dict())

    def restore(self, method: TrainingMethod) -> None:
        """Set this process's random streams back and load ``method``'s per-process tensors."""
        restore_rng(self.rng, self.rng_meta)
        method.load_state_dict(self.method)

    def to_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The tensors (``rng.*``, ``method.*``) and metadata (``{"rng": ...}``) the state file holds for it."""
        return {**self.rng, **prefixed(METHOD_PREFIX, self.method)}, {"rng": self.rng_meta}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any]) -> ProcessState:
        """The process state :meth:`to_tensors` laid out."""
        rng = {name: tensor for name, tensor in tensors.items() if name.startswith(RNG_PREFIX)}
        return cls(rng, metadata["rng"], unprefixed(METHOD_PREFIX, tensors))

    def to_bytes(self) -> bytes:
        """The state as one blob, for the gather of every process's state onto rank 0."""
        return pack(*self.to_tensors())

    @classmethod
    def from_bytes(cls, data: bytes) -> ProcessState:
        """The process state :meth:`to_bytes` packed."""
        return cls.from_tensors(*unpack(data))


@dataclass
class TrainerState:
    """Everything a resumed run needs, after ``epoch`` epochs and ``step`` optimizer steps.

    ``config`` is the run's :meth:`TrainConfig.to_dict`, ``history`` its per-epoch records and
    ``best`` the best result so far (``epoch``, ``metric``, ``value``) or None; ``model`` and
    ``optimizer`` are the network's and the optimizer's state dicts, ``processes`` every process's
    :class:`ProcessState` in rank order, ``shared`` the method's shared state and ``examples`` the
    per-example store.
    """

    config: dict[str, Any]
    epoch: int
    step: int
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    processes: list[ProcessState]
    shared: dict[str, Tensor] = field(default_factory=dict)
    examples: dict[str, Tensor] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        """The number of processes that trained the run."""
        return len(self.processes)

    def to_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The state as the file stores it: named tensors and JSON metadata (see the module docstring)."""
        tensors = prefixed(MODEL_PREFIX, self.model)
        optimizer_tensors, optimizer_meta = optimizer_state_to_tensors(self.optimizer)
        tensors.update(optimizer_tensors)
        ranks = []
        for rank, process in enumerate(self.processes):
            process_tensors, process_meta = process.to_tensors()
            tensors.update(prefixed(_rank_prefix(rank), process_tensors))
            ranks.append(process_meta)
        tensors.update(prefixed(SHARED_PREFIX, self.shared))
        tensors.update(prefixed(EXAMPLES_PREFIX, self.examples))
        metadata = {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "config": self.config,
            "epoch": self.epoch,
            "step": self.step,
            "world_size": self.world_size,
            "schedule": {"kind": self.config["schedule"], "progress_epochs": self.epoch, "step": self.step},
            "optimizer": optimizer_meta,
            "ranks": ranks,
            "history": self.history,
            "best": self.best,
        }
        return tensors, metadata

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any], source: str | os.PathLike[str] = "the state"
    ) -> TrainerState:
        """The state :meth:`to_tensors` laid out; a ValueError naming ``source`` when it is not one or is damaged."""
        if metadata.get("format") != STATE_FORMAT or metadata.get("format_version") != STATE_VERSION:
            raise ValueError(f"{source} is not an hmcam trainer state (format {metadata.get('format')!r})")
        try:
            return cls._parse(tensors, metadata, source)
        except _Damaged as error:
            raise _damaged(source, str(error)) from None

    @classmethod
    def _parse(
        cls, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any], source: str | os.PathLike[str]
    ) -> TrainerState:
        config = _entry(metadata, "config", dict)
        epoch = _entry(metadata, "epoch", int)
        step = _entry(metadata, "step", int)
        world_size = _entry(metadata, "world_size", int)
        optimizer = _entry(metadata, "optimizer", dict)
        ranks = _entry(metadata, "ranks", list)
        history = _entry(metadata, "history", list)
        best = _entry(metadata, "best", (dict, type(None)))
        if epoch < 0 or step < 0 or world_size < 1:
            raise _Damaged(f"epoch {epoch}, step {step}, world size {world_size}")
        if len(history) != epoch or not all(isinstance(record, dict) for record in history):
            raise _Damaged(f"its history does not hold one record per epoch ({epoch} epochs)")
        if any(not isinstance(record.get("train_accuracy"), (int, float)) for record in history):
            raise _Damaged("a history record lacks train_accuracy")
        if best is not None and not (isinstance(best.get("value"), (int, float)) and "epoch" in best):
            raise _Damaged(f"its best result {best!r} lacks an epoch or a value")
        if any(key not in optimizer for key in ("param_groups", "indices", "scalars")):
            raise _Damaged("its optimizer metadata is incomplete")
        if len(ranks) != world_size or not all(isinstance(r, dict) and isinstance(r.get("rng"), dict) for r in ranks):
            raise _Damaged(f"it does not hold the RNG state of {world_size} processes")
        processes = []
        for rank, process_meta in enumerate(ranks):
            process_tensors = unprefixed(_rank_prefix(rank), tensors)
            absent = [name for name in RNG_TENSORS if name not in process_tensors]
            if absent:
                raise _Damaged(f"process {rank}'s RNG tensors {absent} are missing")
            processes.append(ProcessState.from_tensors(process_tensors, process_meta))
        try:
            optimizer_state = optimizer_state_from_tensors(dict(tensors), optimizer)
        except LOAD_ERRORS as error:
            raise _unusable(source, error) from error
        return cls(
            config=config,
            epoch=epoch,
            step=step,
            history=history,
            best=best,
            model=unprefixed(MODEL_PREFIX, tensors),
            optimizer=optimizer_state,
            processes=processes,
            shared=unprefixed(SHARED_PREFIX, tensors),
            examples=unprefixed(EXAMPLES_PREFIX, tensors),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` (safetensors, with its JSON sidecar), atomically."""
        save_tensors(path, *self.to_tensors())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainerState:
        """Read the state at ``path`` onto the CPU; a ValueError naming ``path`` when it is unreadable or damaged."""
        tensors, metadata = load_tensors(path, device="cpu")
        return cls.from_tensors(tensors, metadata, source=path)

    def validate(
        self,
        *,
        config: TrainConfig,
        world_size: int,
        model: Mapping[str, Tensor],
        examples: Collection[str],
        source: str | os.PathLike[str] = "the state",
    ) -> None:
        """Raise ValueError unless the run of ``config`` may resume from this state.

        ``model`` is the run's network state dict (the names and shapes the state's must have),
        ``examples`` the per-example tensors its method registered, and ``world_size`` its
        processes, which must be those that wrote the state. The configuration may differ only in
        :data:`~hmcam.training.config.RESUMABLE_CHANGES`; a field added since the state was written
        is compared as its default, which is what ran.
        """
        if set(self.model) != set(model):
            missing, unknown = sorted(set(model) - set(self.model)), sorted(set(self.model) - set(model))
            raise _damaged(
                source, f"its model tensors differ from {config.model}'s (missing {missing}, unknown {unknown})"
            )
        wrong = [name for name, tensor in self.model.items() if tensor.shape != model[name].shape]
        if wrong:
            raise _damaged(source, f"model tensors {wrong} have the wrong shape")
        if sorted(self.examples) != sorted(examples):
            raise _damaged(
                source, f"it holds per-example state {sorted(self.examples)}, the method registers {sorted(examples)}"
            )
        saved, current = {**TrainConfig().to_dict(), **self.config}, config.to_dict()
        changed = sorted(key for key in current if saved.get(key) != current[key] and key not in RESUMABLE_CHANGES)
        if changed:
            raise ValueError(
                f"cannot resume {Path(config.out)}: the configuration differs in {changed} "
                f"(saved {[saved.get(key) for key in changed]}, now {[current[key] for key in changed]})"
            )
        if self.world_size != world_size:
            raise ValueError(
                f"{source} was written by {self.world_size} processes; resume it with the same number, not {world_size}"
            )

    def restore(
        self,
        *,
        rank: int,
        network: nn.Module,
        optimizer: Optimizer,
        method: TrainingMethod,
        examples: ExampleState,
        source: str | os.PathLike[str] = "the state",
    ) -> None:
        """Load the state into process ``rank``'s network, optimizer, random streams, method and example store.

        Call :meth:`validate` first. Whatever still does not fit is a ValueError naming ``source``.
        """
        try:
            network.load_state_dict(self.model, strict=True)
            optimizer.load_state_dict(self.optimizer)
            self.processes[rank].restore(method)
            method.load_shared_state_dict(self.shared)
            examples.load_state_dict(self.examples)
        except LOAD_ERRORS as error:
            raise _unusable(source, error) from error
