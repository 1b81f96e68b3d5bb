"""The per-example state of a robust evaluation, saved after every stage so that a killed run resumes.

AutoAttack's ``state.py`` pattern: one dataclass holds everything an evaluation has learnt so far
(clean predictions, which attack fooled which example in which restart, the stages each chunk of
examples has completed, the work and time they took) and goes to disk atomically with
:func:`hmcam.core.storage.save_tensors`. The examples are cut into fixed chunks of ``batch_size``; each
process writes its own file (``rank<r>.safetensors``) and a loader merges every file it finds,
taking each chunk from the file where that chunk got furthest. Chunks, not processes, carry the
results, so a run may resume with a different number of processes. The configuration is stored
with the state and must match exactly: a changed one is an error naming each difference.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hmcam.core.storage import load_tensors, save_tensors

STATE_FORMAT = "hmcam-evaluation-state"
STATE_VERSION = 1

#: Tensor fields indexed by example along their last dimension.
EXAMPLE_FIELDS = (
    "clean_prediction",
    "cascade_restart",
    "reached",
    "standalone_restart",
    "standalone_tried",
    "adversarial_prediction",
    "perturbation",
    "half_fooled",
    "half_tried",
    "transfer_fooled",
    "transfer_tried",
)
#: Tensor fields indexed by chunk along their last dimension.
CHUNK_FIELDS = ("completed", "gradients", "seconds")


def normalized(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as it reads back from JSON (tuples become lists), so saved and current compare equal."""
    normal: dict[str, Any] = json.loads(json.dumps(config, sort_keys=True))
    return normal


def config_difference(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One ``"key: saved X, now Y"`` line per setting that differs between two configurations."""
    saved, current = normalized(saved), normalized(current)
    return [
        f"{key}: saved {saved.get(key)!r}, now {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]


@dataclass
class EvaluationState:
    """Everything a robust evaluation knows so far, per example (N), per attack (A) and per chunk (C).

    ``clean_prediction`` is -1 until the clean pass of the example's chunk ran. ``cascade_restart``
    [A, N] is the restart in which the attack fooled the example in the cascade (-1: not fooled, or
    never reached; ``reached`` says which); ``standalone_restart`` / ``standalone_tried`` are the same
    for the runs that complete an attack's standalone outcome on examples an earlier attack had
    already fooled. ``adversarial_prediction`` and ``perturbation`` (its norm under the threat
    model) describe the example the cascade counted, if any. ``half_*`` and ``transfer_*`` are the
    masking checks. ``completed`` [C] counts each chunk's finished stages; ``gradients`` and
    ``seconds`` [S, C] are the input-gradient evaluations and seconds of each stage and chunk.
    """

    config: dict[str, Any]
    clean_prediction: Tensor
    cascade_restart: Tensor
    reached: Tensor
    standalone_restart: Tensor
    standalone_tried: Tensor
    adversarial_prediction: Tensor
    perturbation: Tensor
    half_fooled: Tensor
    half_tried: Tensor
    transfer_fooled: Tensor
    transfer_tried: Tensor
    completed: Tensor
    gradients: Tensor
    seconds: Tensor

    @classmethod
    def empty(cls, config: dict[str, Any], examples: int, attacks: int, chunks: int, stages: int) -> EvaluationState:
        """A state in which nothing has run yet."""

        def flags(*shape: int) -> Tensor:
            return torch.zeros(*shape, dtype=torch.bool)

        def unset(*shape: int, dtype: torch.dtype) -> Tensor:
            return torch.full(shape, -1, dtype=dtype)

        return cls(
            config=normalized(config),
            clean_prediction=unset(examples, dtype=torch.int64),
            cascade_restart=unset(attacks, examples, dtype=torch.int16),
            reached=flags(attacks, examples),
            standalone_restart=unset(attacks, examples, dtype=torch.int16),
            standalone_tried=flags(attacks, examples),
            adversarial_prediction=unset(examples, dtype=torch.int64),
            perturbation=torch.zeros(examples, dtype=torch.float32),
            half_fooled=flags(examples),
            half_tried=flags(examples),
            transfer_fooled=flags(examples),
            transfer_tried=flags(examples),
            completed=torch.zeros(chunks, dtype=torch.int64),
            gradients=torch.zeros(stages, chunks, dtype=torch.int64),
            seconds=torch.zeros(stages, chunks, dtype=torch.float64),
        )

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor field by name."""
        return {name: getattr(self, name) for name in (*EXAMPLE_FIELDS, *CHUNK_FIELDS)}

    def save(self, path: str | Path) -> None:
        """Write the state to ``path`` atomically (and its JSON sidecar with the configuration)."""
        metadata = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "config": self.config}
        save_tensors(path, self.tensors(), metadata)

    @classmethod
    def load(cls, path: str | Path) -> EvaluationState:
        """Read a state written by :meth:`save`; a file of another kind is an error naming it."""
        tensors, metadata = load_tensors(path)
        if metadata.get("format") != STATE_FORMAT or metadata.get("format_version") != STATE_VERSION:
            raise ValueError(
                f"{path} is not an hmcam evaluation state (format {metadata.get('format')!r}, "
                f"version {metadata.get('format_version')!r})"
            )
        missing = [name for name in (*EXAMPLE_FIELDS, *CHUNK_FIELDS) if name not in tensors]
        if missing or not isinstance(metadata.get("config"), dict):
            raise ValueError(f"{path} is an incomplete evaluation state (missing {missing or ['config']})")
        return cls(config=metadata["config"], **{name: tensors[name] for name in (*EXAMPLE_FIELDS, *CHUNK_FIELDS)})

    def check_config(self, current: dict[str, Any], where: str | Path, derived: tuple[str, ...] = ()) -> None:
        """Raise if ``current`` differs from the configuration this state was made with, naming each difference.

        Keys in ``derived`` follow from the others; they are named only when nothing else differs
        (then the code that derives them changed).
        """
        difference = config_difference(self.config, current)
        primary = [line for line in difference if line.split(":", 1)[0] not in derived]
        difference = primary or difference
        if difference:
            raise ValueError(
                f"{where} holds the state of a different evaluation ({'; '.join(difference)}); "
                "use another output folder, or delete that state to start over"
            )

    def check_shapes(self, like: EvaluationState, where: str | Path) -> None:
        """Raise if a loaded state's tensors do not have the shapes of this configuration's state."""
        for name, tensor in like.tensors().items():
            found = getattr(self, name)
            if tuple(found.shape) != tuple(tensor.shape) or found.dtype != tensor.dtype:
                raise ValueError(f"{where}: {name} has shape {tuple(found.shape)}, expected {tuple(tensor.shape)}")

    def take_chunk(self, other: EvaluationState, chunk: int, batch_size: int) -> None:
        """Copy everything ``other`` knows about ``chunk`` (examples and counters) into this state."""
        low, high = chunk * batch_size, (chunk + 1) * batch_size
        for name in EXAMPLE_FIELDS:
            getattr(self, name)[..., low:high] = getattr(other, name)[..., low:high]
        for name in CHUNK_FIELDS:
            getattr(self, name)[..., chunk] = getattr(other, name)[..., chunk]

    def merge(self, others: list[EvaluationState], batch_size: int) -> None:
        """Take each chunk from whichever of ``others`` has completed most stages of it (if more than here)."""
        for chunk in range(self.completed.shape[0]):
            best = max(others, key=lambda state: int(state.completed[chunk]), default=None)
            if best is not None and int(best.completed[chunk]) > int(self.completed[chunk]):
                self.take_chunk(best, chunk, batch_size)

    def copy(self) -> EvaluationState:
        """An independent copy (tensors cloned)."""
        clones: dict[str, Any] = {name: tensor.clone() for name, tensor in self.tensors().items()}
        return dataclasses.replace(self, **clones)


def state_files(folder: str | Path) -> list[Path]:
    """The per-process state files in ``folder``, in name order."""
    return sorted(Path(folder).glob("rank*.safetensors"))


def load_states(
    folder: str | Path, fresh: EvaluationState, batch_size: int, derived: tuple[str, ...] = ()
) -> tuple[EvaluationState, bool]:
    """``fresh`` updated with every state file in ``folder``; also whether any progress was found.

    Each file must carry ``fresh``'s configuration (else an error naming the differences, see
    :meth:`EvaluationState.check_config` for ``derived``) and its tensor shapes.
    """
    loaded = []
    for path in state_files(folder):
        state = EvaluationState.load(path)
        state.check_config(fresh.config, path, derived)
        state.check_shapes(fresh, path)
        loaded.append(state)
    merged = fresh.copy()
    merged.merge(loaded, batch_size)
    return merged, bool(int(merged.completed.sum()) > 0)
