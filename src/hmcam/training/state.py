"""Everything a resumed run needs, as tensors plus JSON: optimizer state and random-number streams.

Nothing here pickles. An optimizer's ``state_dict()`` is split into its tensors (momentum buffers,
step counts), stored under flat names such as ``optimizer.state.3.momentum_buffer``, and a
JSON-serializable skeleton (parameter groups and non-tensor state values). RNG states are likewise
split: torch's CPU and CUDA generator states are byte tensors, NumPy's Mersenne-Twister key and
Python's ``random`` state become int64 tensors, and their remaining scalars go to JSON. Each pair
round-trips exactly, which is what makes a resumed run reproduce an uninterrupted one.

:func:`pack` and :func:`unpack` turn such a pair into bytes (a safetensors blob) so that processes
can exchange their per-rank state through a uint8 all-gather.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor

OPTIMIZER_PREFIX = "optimizer.state."
META_KEY = "__meta__"


def _check_json(value: Any, what: str) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} is not JSON-serializable: {error}") from error
    return value


def optimizer_state_to_tensors(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and a JSON skeleton (see the module docstring)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{OPTIMIZER_PREFIX}{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = _check_json(value, f"optimizer state {index}.{key}")
    skeleton = {
        "param_groups": _check_json(state["param_groups"], "optimizer param_groups"),
        "indices": sorted(int(i) for i in state["state"]),
        "scalars": scalars,
    }
    return tensors, skeleton


def optimizer_state_from_tensors(tensors: dict[str, Tensor], skeleton: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the ``state_dict()`` that :func:`optimizer_state_to_tensors` split."""
    state: dict[int, dict[str, Any]] = {index: {} for index in skeleton["indices"]}
    for name, value in tensors.items():
        if not name.startswith(OPTIMIZER_PREFIX):
            continue
        index, key = name[len(OPTIMIZER_PREFIX) :].split(".", 1)
        if int(index) not in state:
            raise ValueError(f"optimizer tensor {name!r} belongs to no parameter listed in the saved state")
        state[int(index)][key] = value
    for index, entries in skeleton["scalars"].items():
        state[int(index)].update(entries)
    return {"state": state, "param_groups": skeleton["param_groups"]}


def capture_rng() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The states of torch (CPU and every initialized CUDA device), NumPy and Python ``random``."""
    tensors = {"rng.torch": torch.get_rng_state()}
    # torch.cuda.is_initialized has no annotations in torch.
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    numpy_state = np.random.get_state(legacy=True)
    # The global generator is always the legacy MT19937, whose legacy state is this 5-tuple.
    assert isinstance(numpy_state, tuple)
    kind, key, position, has_gauss, cached_gaussian = numpy_state
    tensors["rng.numpy"] = torch.from_numpy(key.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    tensors["rng.python"] = torch.tensor(internal, dtype=torch.int64)
    meta = {
        "numpy": {
            "kind": kind,
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "gauss_next": gauss_next},
        "cuda_devices": sum(name.startswith("rng.cuda.") for name in tensors),
    }
    return tensors, meta


def restore_rng(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Set every RNG back to what :func:`capture_rng` recorded."""
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    devices = meta["cuda_devices"]
    if devices:
        if not torch.cuda.is_available() or torch.cuda.device_count() < devices:
            raise ValueError(f"the saved state holds RNG states of {devices} CUDA devices, which this machine lacks")
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"].to(torch.uint8) for i in range(devices)])
    numpy = meta["numpy"]
    key = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], key, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    python = meta["python"]
    random.setstate((python["version"], tuple(int(v) for v in tensors["rng.python"].tolist()), python["gauss_next"]))


def pack(tensors: dict[str, Tensor], meta: dict[str, Any]) -> bytes:
    """Tensors and JSON metadata as one safetensors blob (the metadata in a uint8 tensor)."""
    if META_KEY in tensors:
        raise ValueError(f"{META_KEY!r} is reserved")
    text = json.dumps(_check_json(meta, "metadata")).encode()
    blob = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    blob[META_KEY] = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    return safetensors_save(blob)


def unpack(data: bytes) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and metadata that :func:`pack` stored."""
    tensors = safetensors_load(data)
    meta = json.loads(tensors.pop(META_KEY).numpy().tobytes().decode())
    return tensors, meta
