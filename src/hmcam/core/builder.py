"""The one builder: a factory looked up by name in a :class:`Registry` and called with checked arguments.

Attacks, training methods and model architectures are each a :class:`Registry`. :func:`build`
looks a name up (an unknown one is a ValueError listing the known names, from
:func:`~hmcam.core.validate.choose`) and refuses a keyword argument that the factory does not take
with a one-line TypeError naming it and the arguments that are accepted, instead of letting it be
dropped or fail deep inside a constructor. What a factory takes is read once, here, by
:func:`accepted_arguments`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hmcam.core.validate import choose

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any], covariant=True)

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _keywords(parameters: Iterable[inspect.Parameter]) -> list[str]:
    return [parameter.name for parameter in parameters if parameter.kind in _KEYWORD_KINDS]


def accepted_arguments(factory: Callable[..., Any]) -> tuple[str, ...]:
    """The names ``factory`` takes as keyword arguments, in the order they are declared.

    For a class, the keyword arguments of its ``__init__`` and of the base classes' ``__init__``
    that it forwards ``**kwargs`` to, walking the MRO until an ``__init__`` without ``**kwargs``;
    for any other callable, its own parameters. ``self`` and ``*args``/``**kwargs`` are not names.
    """
    if not isinstance(factory, type):
        return tuple(_keywords(inspect.signature(factory).parameters.values()))
    names: list[str] = []
    for klass in factory.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
        names += [name for name in _keywords(parameters) if name not in names]
        if not any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
            break
    return tuple(names)


@dataclass(frozen=True)
class Registry(Generic[F]):
    """Factories of one kind (``what``: "attack", "training method", "architecture") by name.

    ``supplied`` are the arguments the code calling :func:`build` always passes itself (the model of
    an attack, the dataset of a training method): they are not checked and not listed as accepted.
    ``noun`` is what the other arguments are called in messages ("argument", "option");
    ``ignore_case`` looks names up in lower case; ``arguments`` reads what a factory takes
    (:func:`accepted_arguments` unless a kind knows better).
    """

    what: str
    entries: Mapping[str, F]
    supplied: tuple[str, ...] = ()
    noun: str = "argument"
    ignore_case: bool = False
    arguments: Callable[[Callable[..., Any]], tuple[str, ...]] = accepted_arguments

    def lookup(self, name: str) -> F:
        """The factory registered as ``name``; TypeError for a non-string, ValueError listing the known names."""
        if not isinstance(name, str):
            raise TypeError(f"{self.what} name must be a string, got {type(name).__name__}")
        return choose(self.what, name.lower() if self.ignore_case else name, self.entries)

    def accepts(self, name: str) -> tuple[str, ...]:
        """The arguments a caller may give the factory ``name`` (those it takes, less the ``supplied`` ones)."""
        return tuple(argument for argument in self.arguments(self.lookup(name)) if argument not in self.supplied)

    def check(self, name: str, arguments: Iterable[str]) -> F:
        """The factory ``name``, once every name of ``arguments`` is one it :meth:`accepts`; TypeError otherwise."""
        factory = self.lookup(name)
        accepted = self.accepts(name)
        unknown = sorted(set(arguments) - set(accepted))
        if unknown:
            listed = str(list(accepted)) if accepted else "none"
            raise TypeError(f"{self.what} {name!r} takes no {self.noun}(s) {unknown}; it accepts {listed}")
        return factory


def build(registry: Registry[Callable[..., R]], name: str, /, *args: Any, **arguments: Any) -> R:
    """``registry``'s factory ``name`` called with ``args`` and ``arguments``, after checking them.

    Every keyword argument but the registry's ``supplied`` ones must be one the factory
    :meth:`~Registry.accepts`; an unknown name is a ValueError and an unknown argument a TypeError,
    both naming what was given and what is known.
    """
    factory = registry.check(name, [key for key in arguments if key not in registry.supplied])
    return factory(*args, **arguments)
