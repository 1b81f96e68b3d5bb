"""Training methods by name, as configurations and the command line refer to them."""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from hmcam.training.methods.base import TrainingMethod

#: Every registered training method class by its ``name``.
METHODS: dict[str, type[TrainingMethod]] = {}

M = TypeVar("M", bound=type[TrainingMethod])


def register_method(cls: M) -> M:
    """Class decorator adding a :class:`TrainingMethod` subclass to :data:`METHODS` under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, TrainingMethod)):
        raise TypeError(f"only TrainingMethod subclasses can be registered, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} needs a non-empty string `name` to be registered")
    if name in METHODS and METHODS[name] is not cls:
        raise ValueError(f"a training method named {name!r} is already registered ({METHODS[name].__name__})")
    METHODS[name] = cls
    return cls


def build_method(name: str, *, dataset: str | None = None, **kwargs: Any) -> TrainingMethod:
    """Instantiate the method registered as ``name`` with its keyword arguments.

    ``dataset`` lets the method pick per-dataset defaults (see :mod:`hmcam.training.threat`). An
    unknown name raises ValueError listing the known ones; an argument the method does not take
    raises TypeError naming the method and the arguments it accepts.
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"unknown training method {name!r}; choose one of {sorted(METHODS)}")
    cls = METHODS[name]
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p not in ("self", "dataset")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"training method {name!r} takes no argument(s) {unknown}; it accepts {accepted}")
    return cls(dataset=dataset, **kwargs)
