"""Crash-safe tensor files: safetensors with embedded JSON metadata and a readable JSON sidecar.

Nothing here unpickles. A file is written to a temporary name in the same folder, flushed to disk
and renamed over the target (and the folder flushed, so the rename survives a power cut), so a kill
at any moment leaves either the old file or the new one. A write that fails (a full disk) removes its
temporary file and leaves the old file as it was; temporary files are named ``.NAME.XXXX.tmp``,
which no loader looks for (``*.safetensors``, ``*.json`` and ``rankN.safetensors`` never match).
The metadata is stored twice: inside the safetensors header (the authoritative copy, so weights and
metadata can never disagree) and as ``<name>.json`` beside it for people and other tools.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

METADATA_KEY = "hmcam"


def current_umask() -> int:
    """The process's file-creation mask, read without changing it where Linux allows (``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere the only way to read the mask is to set it and put it back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; some platforms and file systems cannot open or sync a folder.
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(paths: Sequence[Path]) -> None:
    # Cleaning up after a failed write must not hide why it failed.
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _stage(path: Path, data: bytes) -> Path:
    """``data`` written and flushed to disk under a temporary name beside ``path``; removed again on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _discard([tmp])
        raise
    return tmp


def atomic_write_many(files: Sequence[tuple[str | os.PathLike[str], bytes]]) -> None:
    """Write several files so that a failure while writing (a full disk) changes none of them.

    Every file is first written and flushed under a temporary name; only then are they renamed over
    their targets, in the order given (a rename needs no space), so the last is the commit point. A
    failure before the renames removes every temporary file and leaves each target as it was.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for target, data in files:
            staged.append((_stage(Path(target), data), Path(target)))
        for index, (tmp, target) in enumerate(staged):
            os.replace(tmp, target)
            staged[index] = (target, target)
    except BaseException:
        _discard([tmp for tmp, target in staged if tmp != target])
        raise
    for folder in dict.fromkeys(target.parent for _, target in staged):
        _fsync_folder(folder)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename, fsync of the folder).

    The file gets the permissions an ordinary ``open(path, "w")`` would give it (``0o666`` less the
    umask), not the owner-only mode of the temporary file. A failure leaves ``path`` as it was and
    no temporary file behind.
    """
    atomic_write_many([(path, data)])


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar that sits beside a safetensors file: ``model.safetensors`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Save ``tensors`` and JSON-serializable ``metadata`` to ``path`` (safetensors) and its sidecar.

    Both files are written to disk before either is renamed into place (:func:`atomic_write_many`),
    so a write that fails leaves the old pair as it was; the sidecar is renamed first and the tensor
    file last, so replacing the tensor file is the commit point of the pair: a caller that writes
    several files can end with this one.
    """
    text = json.dumps(metadata, sort_keys=True)
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    blob = safetensors_bytes(contiguous, metadata={METADATA_KEY: text})
    sidecar = (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()
    atomic_write_many([(sidecar_path(path), sidecar), (path, blob)])


def load_tensors(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors and metadata written by :func:`save_tensors`; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tensor file at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    if METADATA_KEY not in header:
        raise ValueError(f"{path} has no hmcam metadata in its header; it was not written by hmcam")
    try:
        metadata = json.loads(header[METADATA_KEY])
    except (ValueError, RecursionError) as error:  # RecursionError: a maliciously deep nesting
        raise ValueError(f"{path} has unreadable metadata in its header: {type(error).__name__}: {error}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path} metadata must be a JSON object, got {type(metadata).__name__}")
    return tensors, metadata
