"""The one set of argument checks: each returns the checked value or raises an error naming the argument.

Attacks, training methods, configurations, models and the experiments all check their arguments
here, so a bad value gets the same one-line message wherever it is given. ``bool`` is never taken
for a number, and non-finite numbers are refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is a real bool; anything else (``"False"``, 0, None) is a TypeError.

    ``bool("False")`` is True, so a flag read from a configuration string would silently turn an
    untargeted attack into a targeted one; refusing non-bools is the only safe reading.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None, *, optional: bool = False) -> Any:
    """Return ``value`` if it is an integer in ``[minimum, maximum]`` (or None when ``optional``)."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer{' or None' if optional else ''}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_number(
    name: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
    optional: bool = False,
) -> Any:
    """Return ``value`` as a float if it is a finite number from ``low`` to ``high`` (None passes when ``optional``).

    ``open_low`` and ``open_high`` exclude the ends; the error names the interval in the usual notation.
    """
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number{' or None' if optional else ''}, got {value!r}")
    if value < low or value > high or (open_low and value == low) or (open_high and value == high):
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return float(value)


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 1, else raise naming the parameter."""
    checked: int = check_int(name, value, 1)
    return checked


def check_non_negative_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 0 (a count that may be zero, such as a restart period)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def check_positive_float(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_non_negative_float(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number >= 0 (a decay, a confidence margin)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def check_unit_interval(name: str, value: Any) -> float:
    """Return ``value`` as a float if it lies in [0, 1), e.g. a decay rate such as beta1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_text(name: str, value: Any, *, optional: bool = False) -> Any:
    """Return ``value`` if it is a non-empty string (or None when ``optional``)."""
    if optional and value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string{' or None' if optional else ''}, got {value!r}")
    return value


def check_string_keys(name: str, value: Any) -> dict[str, Any]:
    """Return ``value`` if it is a dict whose keys are all strings (keyword arguments, options)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{name} must be a dict with string keys, got {value!r}")
    return value


def choose(what: str, name: str, table: Mapping[str, T]) -> T:
    """The entry ``name`` of ``table``; a ValueError naming ``what`` and listing the known names otherwise."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(table)}")
    return table[name]
