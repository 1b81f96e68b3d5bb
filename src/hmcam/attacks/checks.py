"""Argument checks shared by every attack: each returns the value or raises an error naming it."""

from __future__ import annotations

import math
from typing import Any


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is a real bool; anything else (``"False"``, 0, None) is a TypeError.

    ``bool("False")`` is True, so a flag read from a configuration string would silently turn an
    untargeted attack into a targeted one; refusing non-bools is the only safe reading.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 1, else raise naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
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
