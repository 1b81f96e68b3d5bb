"""Models hmcam did not train: a user's code, TorchScript or ``torch.export`` files, torchvision and timm.

:func:`load_external_model` turns a *model spec* into an ``nn.Module`` that takes pixels in [0, 1]:

- ``path/to/model.py:build``: a Python file, run with importlib, and a function in it that returns the model
  (called with no arguments);
- ``package.module:build``: the same from an importable module;
- ``torchvision:NAME`` / ``timm:NAME``: a network of the optional extras ``hmcam[vision]`` / ``hmcam[timm]``,
  built untrained for the dataset's number of classes;
- ``model.pt`` / ``model.pt2``: a TorchScript file (``torch.jit.save``) or a ``torch.export`` program
  (``torch.export.save``), told apart by the file's content, loaded with ``torch.jit.load`` /
  ``torch.export.load``, neither of which unpickles arbitrary objects.

Weights (:func:`load_state_dict_file`) come from safetensors or a ``.pt``/``.pth`` state dict read with
``torch.load(weights_only=True)``; a ``state_dict`` / ``model_state_dict`` / ``model`` key around them is
unwrapped and a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix stripped.
:func:`load_weights` loads them strictly, with one line naming the missing and unexpected keys otherwise.
With a mean and std the model is wrapped in :class:`~hmcam.models.wrappers.Normalize` so that attacks
stay in pixel space.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from hmcam.models.imagenet import MissingDependencyError
from hmcam.models.wrappers import Normalize

#: Keys that hold the state dict inside a saved training checkpoint, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
#: Prefixes that wrappers add to every key: DataParallel / DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: The optional extras behind the ``NAME:MODEL`` specs, and the ``pip`` extra that installs each.
EXTRAS = {"torchvision": "vision", "timm": "timm"}
_SPEC = re.compile(r"^(?P<source>.+):(?P<attribute>[A-Za-z_][A-Za-z0-9_.]*)$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class WeightsError(ValueError):
    """Weights that cannot be read, or that do not fit the model (missing, unexpected or misshapen tensors)."""


def _first(names: Sequence[str], count: int = 4) -> str:
    shown = ", ".join(names[:count])
    return shown + (", ..." if len(names) > count else "")


# --------------------------------------------------------------------------------------------- files


def model_file_kind(path: str | os.PathLike[str]) -> str:
    """What a file holds, from its content: "torchscript", "export", "state_dict", "safetensors" or "unknown".

    TorchScript archives hold ``code/`` and ``constants.pkl`` entries; ``torch.export.save`` writes a
    ``models/*.json`` graph; ``torch.save`` writes only ``data.pkl`` and tensor data.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/code/" in name or name.endswith("constants.pkl") for name in names):
            return "torchscript"
        if any(name.endswith("archive_format") or re.search(r"(^|/)models/[^/]+\.json$", name) for name in names):
            return "export"
        if any(name.endswith("data.pkl") for name in names):
            return "state_dict"
        return "unknown"
    if len(head) >= 9 and head[8:9] == b"{":  # 8-byte little-endian header length, then a JSON header
        return "safetensors"
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
        return "state_dict"
    return "unknown"


class _FixedMode(nn.Module):
    """Holds an exported graph, whose train/eval mode was fixed when it was exported and cannot be switched."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def train(self, mode: bool = True) -> _FixedMode:
        """Record the mode without passing it on: the exported graph keeps the one it was exported in."""
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        """The exported program's output for ``x``."""
        out: Tensor = self.graph(x)
        return out


def load_compiled_model(path: str | os.PathLike[str]) -> nn.Module:
    """A TorchScript file or a ``torch.export`` program at ``path``, on the CPU; ValueError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    kind = model_file_kind(path)
    if kind == "torchscript":
        with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, but still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            module: nn.Module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        return module
    if kind == "export":
        program = torch.export.load(str(path))
        return _FixedMode(program.module())
    if kind in ("state_dict", "safetensors"):
        raise ValueError(
            f"{path} holds weights, not a model; give the code that builds it (FILE.py:FUNCTION --weights {path}) "
            f"or a published architecture (--architecture NAME --weights {path})"
        )
    raise ValueError(f"{path} is neither an hmcam checkpoint, a TorchScript file nor a torch.export program")


# --------------------------------------------------------------------------------------------- code


def _attribute(owner: Any, dotted: str, where: str) -> Any:
    value = owner
    for part in dotted.split("."):
        if not hasattr(value, part):
            raise ValueError(f"{where} has no {dotted!r}")
        value = getattr(value, part)
    return value


def _import_file(path: Path) -> Any:
    name = f"hmcam_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path} as Python code")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # so that the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(folder)
    return module


def _require(package: str) -> Any:
    try:
        return importlib.import_module(package)
    except Exception as error:  # absent, or built for another torch (torchvision raises RuntimeError then)
        raise MissingDependencyError(
            f"{package}:NAME needs {package}, which cannot be imported ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else 'not installed'}); "
            f"install the extra with: pip install 'hmcam[{EXTRAS[package]}]'"
        ) from error


def build_from_spec(spec: str, num_classes: int | None = None, in_channels: int | None = None) -> nn.Module:
    """The untrained (or as-built) model that ``spec`` names, on the CPU.

    ``FILE.py:FUNCTION`` and ``package.module:FUNCTION`` call the function with no arguments.
    ``torchvision:NAME`` and ``timm:NAME`` build the named network with ``num_classes`` outputs (and, for
    timm, ``in_channels`` inputs), without downloading weights.
    """
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(
            f"model {spec!r} is not FILE.py:FUNCTION, package.module:FUNCTION, torchvision:NAME, timm:NAME, "
            "an hmcam checkpoint or a TorchScript/torch.export file"
        )
    source, attribute = match["source"], match["attribute"]
    model: Any
    if source == "torchvision":
        vision = _require("torchvision")
        extra: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
        try:
            model = vision.models.get_model(attribute, weights=None, **extra)
        except ValueError as error:
            raise ValueError(f"torchvision has no model {attribute!r}: {error}") from None
    elif source == "timm":
        timm = _require("timm")
        options: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
        if in_channels is not None:
            options["in_chans"] = in_channels
        try:
            model = timm.create_model(attribute, pretrained=False, **options)
        except RuntimeError as error:  # timm's "Unknown model"
            raise ValueError(f"timm has no model {attribute!r}: {error}") from None
    else:
        if source.endswith(".py"):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"no Python file at {path} (model {spec!r})")
            module = _import_file(path)
        elif _MODULE.match(source):
            module = importlib.import_module(source)
        else:
            raise ValueError(f"model {spec!r}: {source!r} is neither a .py file nor a package.module name")
        builder = _attribute(module, attribute, source)
        if not callable(builder):
            raise TypeError(f"{spec}: {attribute} is a {type(builder).__name__}, not a function")
        model = builder()
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


# --------------------------------------------------------------------------------------------- weights


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file: {error}") from None


def _unwrap(value: Any, path: Path) -> dict[str, Tensor]:
    for _ in range(4):  # a training checkpoint may nest them: {"model": {"state_dict": ...}}
        if not isinstance(value, Mapping):
            raise WeightsError(f"{path} holds a {type(value).__name__}, not a state dict")
        if value and all(isinstance(tensor, Tensor) for tensor in value.values()):
            break
        inner = next((key for key in WRAPPER_KEYS if isinstance(value.get(key), Mapping)), None)
        if inner is None:
            keys = sorted(map(str, value))
            raise WeightsError(
                f"{path} is not a state dict of tensors and has no {'/'.join(WRAPPER_KEYS)} key holding one "
                f"(keys: {_first(keys, 6)})"
            )
        value = value[inner]
    if not all(isinstance(key, str) for key in value):
        raise WeightsError(f"{path}: the state dict's keys are not all strings")
    return dict(value)


def strip_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` without the ``module.`` / ``_orig_mod.`` prefix that every key carries, where one does."""
    result = dict(state)
    changed = True
    while changed and result:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in result):
                result = {key[len(prefix) :]: tensor for key, tensor in result.items()}
                changed = True
    return result


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The state dict in a safetensors or ``torch.save`` file, unwrapped and without wrapper prefixes.

    ``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)``: tensors and plain containers
    only, never arbitrary objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    kind = model_file_kind(path)
    if kind == "safetensors":
        state = _read_safetensors(path)
    elif kind in ("torchscript", "export"):
        raise WeightsError(f"{path} is a {kind} model, not weights; give it as the model itself, without --weights")
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise WeightsError(f"cannot read weights from {path} (weights only, no pickled objects): {first}") from None
        state = _unwrap(loaded, path)
    if not state:
        raise WeightsError(f"{path} holds no tensors")
    return strip_prefixes(state)


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise :class:`WeightsError` in one line unless ``state`` has exactly ``model``'s keys and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    misshapen = [
        f"{key} is {list(state[key].shape)}, the model needs {list(expected[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if misshapen:
        problems.append(f"{len(misshapen)} misshapen tensors ({_first(misshapen, 2)})")
    if problems:
        raise WeightsError(f"{source} does not fit the model: " + "; ".join(problems))


def load_weights(model: nn.Module, state: Mapping[str, Tensor], source: str) -> nn.Module:
    """``model`` with ``state`` loaded strictly (checked first by :func:`check_state_dict`)."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model


# --------------------------------------------------------------------------------------------- together


def parse_statistics(text: str, what: str) -> tuple[float, ...]:
    """Per-channel values from ``"0.5"`` or ``"0.4914,0.4822,0.4465"``; ValueError naming ``what`` otherwise."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or not all(value == value and abs(value) != float("inf") for value in values):
        raise ValueError(f"{what} must hold finite numbers, got {text!r}")
    return values


def normalized(model: nn.Module, mean: Sequence[float], std: Sequence[float], channels: int) -> Normalize:
    """``model`` behind :class:`Normalize`; one value of ``mean``/``std`` stands for every channel."""
    means = tuple(mean) * channels if len(mean) == 1 else tuple(mean)
    stds = tuple(std) * channels if len(std) == 1 else tuple(std)
    for name, values in (("mean", means), ("std", stds)):
        if len(values) != channels:
            raise ValueError(f"--{name} has {len(values)} values but the data has {channels} channels")
    return Normalize(model, means, stds)


def load_external_model(
    spec: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """The model ``spec`` names (see the module docstring), with ``weights``, normalization, on ``device``.

    Returns ``(model, metadata)`` with the model in eval mode; ``metadata`` says where the model came from
    (``source``, ``kind``, ``weights``, ``normalization``).
    """
    if (mean is None) != (std is None):
        raise ValueError("give both --mean and --std, or neither")
    path = Path(spec)
    model: nn.Module
    if path.is_file() and not spec.endswith(".py"):
        if weights is not None:
            raise ValueError(f"{spec} is a whole model; --weights applies to FILE.py:FUNCTION and --architecture")
        kind = model_file_kind(path)
        model = load_compiled_model(path)
    else:
        kind = "code"
        model = build_from_spec(spec, num_classes, in_channels)
        if weights is not None:
            load_weights(model, load_state_dict_file(weights), str(weights))
    normalization = None
    if mean is not None and std is not None:
        channels = in_channels if in_channels is not None else max(len(mean), len(std))
        wrapped = normalized(model, mean, std, channels)
        normalization = {"mean": wrapped.mean.flatten().tolist(), "std": wrapped.std.flatten().tolist()}
        model = wrapped
    metadata: dict[str, Any] = {
        "source": spec,
        "kind": kind,
        "weights": None if weights is None else str(weights),
        "normalization": normalization,
    }
    return model.to(device).eval(), metadata
