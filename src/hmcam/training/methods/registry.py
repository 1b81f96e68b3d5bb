"""Training methods by name, as configurations and the command line refer to them."""

from __future__ import annotations

from typing import Any, TypeVar

from hmcam.core.builder import Registry, build
from hmcam.training.methods.base import TrainingMethod

#: Every registered training method class by its ``name``.
METHODS: dict[str, type[TrainingMethod]] = {}

#: :data:`METHODS` for :func:`hmcam.core.builder.build`; the dataset is passed by :func:`build_method`.
METHOD_REGISTRY: Registry[type[TrainingMethod]] = Registry("training method", METHODS, supplied=("dataset",))

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
    return build(METHOD_REGISTRY, name, dataset=dataset, **kwargs)
