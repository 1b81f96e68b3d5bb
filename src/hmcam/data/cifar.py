"""Readers for CIFAR-10 and CIFAR-100 in both published versions: python pickle batches and plain binary.

The python version stores each batch as a pickled dict (``data``: uint8 ``[N, 3072]`` in
channel-major order, ``labels`` for CIFAR-10, ``fine_labels`` for CIFAR-100). Pickle can run arbitrary
code, so batches are read with :class:`RestrictedUnpickler`, which resolves only the handful of
globals numpy needs to rebuild an array and refuses anything else. The binary version is fixed-size
records (label bytes then 3072 pixel bytes) and involves no pickle at all.
"""

from __future__ import annotations

import codecs
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric

PIXELS_PER_IMAGE = 3 * 32 * 32
SPLITS = ("train", "test")


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; nothing from it was executed."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Pickle protocol <= 2 stores bytes as _codecs.encode(text, "latin1"); other codecs (zlib, ...)
    # have no place in a CIFAR batch.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}; only latin1 rebuilds bytes")
    return codecs.encode(text, "latin1")


# Both numpy module spellings occur: numpy < 2 pickles "numpy.core.*", numpy >= 2 "numpy._core.*".
# "__builtin__" is how protocol-2 pickles from Python 2 (the published CIFAR files) name builtins.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(f"{pkg}.multiarray", "_reconstruct"): _multiarray._reconstruct for pkg in ("numpy.core", "numpy._core")},
    # _frombuffer is private (absent from numpy's stubs) but it is what numpy's own pickles name.
    **{(f"{pkg}.numeric", "_frombuffer"): _numeric._frombuffer for pkg in ("numpy.core", "numpy._core")},  # type: ignore[attr-defined]
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): bytes,
    ("__builtin__", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("__builtin__", "bytearray"): bytearray,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds dicts, lists, strings, bytes and numpy arrays and nothing else.

    Every global the pickle names is looked up in :data:`ALLOWED_GLOBALS`; any other (``os.system``,
    ``builtins.eval``, a class with a malicious ``__reduce__``) raises :class:`UnsafePickleError`
    before it can be called. Persistent ids are refused as well.
    """

    def find_class(self, module: str, name: str) -> Any:
        """The allow-listed object for global ``module.name``; :class:`UnsafePickleError` for any other."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: a CIFAR batch only needs numpy arrays, "
                "dicts, lists and strings"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse every persistent id: a CIFAR batch has none."""
        raise UnsafePickleError(f"refusing persistent id {pid!r}")


def read_python_batch(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Unpickle one CIFAR python batch with :class:`RestrictedUnpickler`; keys come back as ``str``.

    Raises :class:`UnsafePickleError` for a pickle that names a forbidden global and
    :class:`ValueError` for a corrupt one or one that is not a dict.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            # latin1 is numpy's documented way to read arrays pickled by Python 2, which the official
            # files were.
            batch = RestrictedUnpickler(handle, encoding="latin1").load()
        except UnsafePickleError as error:
            raise UnsafePickleError(f"{path}: {error}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
            raise ValueError(f"{path} is not a readable CIFAR batch: {error!r}") from error
    if not isinstance(batch, dict):
        raise ValueError(f"{path} should hold a dict, it holds a {type(batch).__name__}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}


def _python_batch_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_python_batch(path)
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(f"{path} has no {key!r} entry (keys: {sorted(batch)})")
    data, labels = batch["data"], batch[label_key]
    well_formed = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
    if not well_formed or data.shape[1] != PIXELS_PER_IMAGE:
        described = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be a uint8 array [N, {PIXELS_PER_IMAGE}], got {described}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: {label_key!r} must be a list of integers, got {labels.dtype} of shape {labels.shape}"
        )
    if len(labels) != len(data):
        raise ValueError(f"{path} holds {len(data)} images but {len(labels)} {label_key!r}")
    return data, labels.astype(np.int64)


def _read_binary_batch(
    path: Path, label_bytes: int, label_index: int, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + PIXELS_PER_IMAGE
    size = path.stat().st_size
    if size == 0 or size % record:
        raise ValueError(
            f"{path} has {size} bytes, not a positive multiple of the {record}-byte record; "
            "it is truncated or not a CIFAR binary batch"
        )
    count = size // record if limit is None else min(limit, size // record)
    with open(path, "rb") as handle:
        raw = _read_all(handle, count * record, path)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(count, record)
    return rows[:, label_bytes:], rows[:, label_index].astype(np.int64)


def _read_all(handle: BinaryIO, size: int, path: Path) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise ValueError(f"{path} shrank while being read: expected {size} bytes, got {len(data)}")
    return data


@dataclass(frozen=True)
class CifarLayout:
    """Where one published version of a CIFAR dataset keeps each split, and how it stores labels.

    ``label_key`` is set for the python (pickle) version; for the binary version ``label_bytes`` is
    the number of label bytes before each image and ``label_index`` the one holding the class.
    """

    folder: str
    files: dict[str, tuple[str, ...]]
    label_key: str | None = None
    label_bytes: int = 0
    label_index: int = 0

    def paths(self, directory: Path, split: str) -> list[Path]:
        """The batch files of ``split`` when this version is stored under ``directory``."""
        if split not in self.files:
            raise ValueError(f"CIFAR has splits {list(self.files)}, got {split!r}")
        return [directory / self.folder / name for name in self.files[split]]


LAYOUTS: dict[str, tuple[CifarLayout, ...]] = {
    "cifar10": (
        CifarLayout(
            "cifar-10-batches-py",
            {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
            label_key="labels",
        ),
        CifarLayout(
            "cifar-10-batches-bin",
            {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
            label_bytes=1,
            label_index=0,
        ),
    ),
    "cifar100": (
        CifarLayout("cifar-100-python", {"train": ("train",), "test": ("test",)}, label_key="fine_labels"),
        # Binary CIFAR-100 records are <coarse label><fine label><pixels>.
        CifarLayout("cifar-100-binary", {"train": ("train.bin",), "test": ("test.bin",)}, label_bytes=2, label_index=1),
    ),
}


def _layout(variant: str, directory: Path, split: str) -> CifarLayout | None:
    if variant not in LAYOUTS:
        raise ValueError(f"unknown CIFAR variant {variant!r}; expected one of {sorted(LAYOUTS)}")
    for layout in LAYOUTS[variant]:
        if all(path.is_file() for path in layout.paths(directory, split)):
            return layout
    return None


def has_split(directory: Path, split: str, variant: str) -> bool:
    """Whether ``directory`` holds every batch of ``split`` of ``variant`` (cifar10 or cifar100), either version."""
    return _layout(variant, directory, split) is not None


def load_split(directory: Path, split: str, variant: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``split`` of ``variant`` from ``directory``: uint8 images ``[N, 3, 32, 32]`` and int64 labels ``[N]``.

    The python version is preferred when both are present. With ``limit=n`` batches are read in
    order only until ``n`` examples are in hand (binary batches read just the needed records).
    """
    layout = _layout(variant, directory, split)
    if layout is None:
        expected = " or ".join(str(directory / lay.folder) for lay in LAYOUTS[variant])
        raise FileNotFoundError(f"no complete {variant} {split!r} split in {expected}")
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    remaining = limit
    for path in layout.paths(directory, split):
        if remaining == 0:
            break
        if layout.label_key is not None:
            data, batch_labels = _python_batch_arrays(path, layout.label_key)
            if remaining is not None:
                data, batch_labels = data[:remaining], batch_labels[:remaining]
        else:
            data, batch_labels = _read_binary_batch(path, layout.label_bytes, layout.label_index, remaining)
        images.append(data)
        labels.append(batch_labels)
        if remaining is not None:
            remaining -= len(data)
    pixels = np.concatenate(images).reshape(-1, 3, 32, 32)
    return pixels, np.concatenate(labels)
