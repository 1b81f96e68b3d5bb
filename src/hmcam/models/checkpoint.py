"""Model checkpoints: weights in safetensors, with everything needed to rebuild the model in the header.

A checkpoint is one ``.safetensors`` file written atomically by :func:`hmcam.core.storage.save_tensors`
(plus its readable ``.json`` sidecar). Its metadata names the architecture and the exact
:func:`~hmcam.models.registry.build_model` arguments, so :func:`load_checkpoint` rebuilds the network
from the zoo and loads the weights strictly; nothing is ever unpickled. The metadata (format
version 1) holds::

    format, format_version      "hmcam-checkpoint", 1
    architecture                a name in hmcam.models.MODELS
    build                       {"num_classes", "in_channels", "mean", "std", "options"}: build_model's arguments
    dataset, input_shape        the data the model was trained on and its [C, H, W] pixel input
    num_classes, normalization  the same facts as in "build", for readers ({"mean", "std"} or null)
    training, metrics           free JSON objects: the training configuration and the results
    versions                    {"hmcam", "torch"} that wrote the file
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hmcam.core.storage import load_tensors, save_tensors
from hmcam.core.version import __version__
from hmcam.models.imagenet import require_torchvision
from hmcam.models.registry import MODELS, build_model, channel_statistics, get_spec

FORMAT_NAME = "hmcam-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"


class CheckpointError(ValueError):
    """A file is not a usable hmcam checkpoint: unreadable, unknown architecture or mismatched tensors."""


def _reference_model(build: dict[str, Any], architecture: str) -> nn.Module:
    if get_spec(architecture).family == "imagenet":
        # Import torchvision outside the meta-device context so that its module-level tensors are real.
        require_torchvision()
    # Built on the meta device: shapes and names without allocating or initializing any weights.
    with torch.device("meta"):
        return build_model(
            architecture,
            num_classes=build["num_classes"],
            in_channels=build["in_channels"],
            mean=build["mean"],
            std=build["std"],
            **build["options"],
        )


def _first_names(names: list[str]) -> str:
    shown = f"{names[:5]}"
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _mismatches(expected: dict[str, Tensor], found: dict[str, Tensor]) -> list[str]:
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"missing tensors {_first_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_first_names(unexpected)}")
    for key in sorted(set(expected) & set(found)):
        want, got = expected[key], found[key]
        if tuple(want.shape) != tuple(got.shape):
            problems.append(f"tensor {key!r} has shape {list(got.shape)}, the architecture needs {list(want.shape)}")
        elif want.dtype.is_floating_point != got.dtype.is_floating_point:
            problems.append(f"tensor {key!r} has dtype {got.dtype}, the architecture needs {want.dtype}")
    return problems


def _json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} must be JSON-serializable: {error}") from error
    return value


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    architecture: str,
    dataset: str,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    training: dict[str, Any],
    metrics: dict[str, Any],
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save ``model`` (as built by ``build_model(architecture, ...)``) to ``path`` atomically.

    ``input_shape`` is the ``(C, H, W)`` pixel input, so ``in_channels = C``; ``mean``/``std`` are the
    normalization the model was built with (None for none) and ``options`` its architecture options.
    Before writing, the model's tensors are checked against a model rebuilt from these arguments, so
    a checkpoint that cannot be loaded back is never written. Returns the metadata written.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"checkpoint path must end in {SUFFIX}, got {path}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    get_spec(architecture)
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a non-empty string, got {dataset!r}")
    shape = list(input_shape)
    if len(shape) != 3 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"input_shape must be three positive integers (C, H, W), got {input_shape!r}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    normalization = None
    if mean is not None and std is not None:
        normalization = {
            "mean": list(channel_statistics(mean, "mean", shape[0])),
            "std": list(channel_statistics(std, "std", shape[0])),
        }
    build = {
        "num_classes": num_classes,
        "in_channels": shape[0],
        "mean": None if normalization is None else normalization["mean"],
        "std": None if normalization is None else normalization["std"],
        "options": _json_object({} if options is None else options, "options"),
    }
    reference = _reference_model(build, architecture)
    state = model.state_dict()
    problems = _mismatches(reference.state_dict(), state)
    if problems:
        raise ValueError(
            f"the model does not match architecture {architecture!r} built with {build}: " + "; ".join(problems)
        )
    for key, given in (normalization or {}).items():
        stored = state[key].flatten().tolist()
        if not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(stored, given, strict=True)):
            raise ValueError(f"the model normalizes with {key} {stored}, not the given {given}")
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "build": build,
        "dataset": dataset,
        "input_shape": shape,
        "num_classes": num_classes,
        "normalization": normalization,
        "training": _json_object(training, "training"),
        "metrics": _json_object(metrics, "metrics"),
        "versions": {"hmcam": __version__, "torch": torch.__version__},
    }
    save_tensors(path, state, metadata)
    return metadata


def _read_build(metadata: Any, path: Path) -> tuple[str, dict[str, Any]]:
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path} metadata must be a JSON object, got {type(metadata).__name__}")
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not an hmcam checkpoint (format {metadata.get('format')!r})")
    version = metadata.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this hmcam reads versions 1 to {FORMAT_VERSION}"
        )
    architecture = metadata.get("architecture")
    if architecture not in MODELS:
        raise CheckpointError(f"{path} holds unknown architecture {architecture!r}; known: {sorted(MODELS)}")
    build = metadata.get("build")
    fields = ("num_classes", "in_channels", "mean", "std", "options")
    if not isinstance(build, dict) or any(key not in build for key in fields):
        raise CheckpointError(f"{path} metadata lacks the build arguments {list(fields)}")
    return architecture, build


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_checkpoint` at ``path`` and load its weights strictly.

    Returns ``(model, metadata)`` with the model on ``device`` in eval mode. Raises
    :class:`CheckpointError` for a file that is not a readable hmcam checkpoint, an unknown
    architecture or invalid build arguments, and missing, unexpected or wrongly shaped tensors.
    """
    path = Path(path)
    try:
        tensors, metadata = load_tensors(path, device=device)
    except ValueError as error:
        raise CheckpointError(str(error)) from error
    architecture, build = _read_build(metadata, path)
    try:
        model = _reference_model(build, architecture)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has invalid build arguments for {architecture!r}: {error}") from error
    expected = model.state_dict()
    problems = _mismatches(expected, tensors)
    if problems:
        raise CheckpointError(f"{path} does not fit architecture {architecture!r}: " + "; ".join(problems))
    converted = {key: tensors[key].to(expected[key].dtype) for key in expected}
    model.load_state_dict(converted, strict=True, assign=True)
    left_on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise CheckpointError(f"{path} does not set {left_on_meta[:5]} of architecture {architecture!r}")
    return model.to(device).eval(), metadata
