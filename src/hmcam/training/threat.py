"""The L-inf threat model each dataset is trained and evaluated against by default.

MNIST-like datasets use Madry et al.'s eps = 0.3 with 40 steps of 0.01 (the paper's Table 7 setting,
section 5.5); CIFAR uses eps = 8/255 with 7 steps of 2/255 (Madry et al.'s CIFAR-10 PGD-7, the
paper's Tables 4-5 radius). Every value can be overridden where it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from hmcam.core.validate import check_positive_float, check_positive_int


@dataclass(frozen=True)
class Threat:
    """An L-inf ball of radius ``eps`` searched by ``steps`` PGD steps of size ``alpha``."""

    eps: float
    alpha: float
    steps: int


MNIST_LIKE = Threat(eps=0.3, alpha=0.01, steps=40)
CIFAR_LIKE = Threat(eps=8 / 255, alpha=2 / 255, steps=7)

THREATS: dict[str, Threat] = {
    "mnist": MNIST_LIKE,
    "fashion-mnist": MNIST_LIKE,
    "cifar10": CIFAR_LIKE,
    "cifar100": CIFAR_LIKE,
}


def default_threat(dataset: str | None) -> Threat | None:
    """The default threat model of ``dataset`` (case-insensitive), or None when it has none."""
    if dataset is None:
        return None
    return THREATS.get(dataset.lower())


def fill_defaults(
    dataset: str | None,
    given: dict[str, Any],
    error: str,
    defaults: Callable[[Threat], dict[str, Any] | None] = asdict,
) -> dict[str, Any]:
    """``given`` with each None replaced by the value ``defaults`` gives for ``dataset``'s threat model.

    ``defaults(threat)`` maps names to values (by default the threat's eps, alpha and steps) or is
    None when the method has no defaults for that threat. Without defaults, a ValueError with
    ``error`` formatted with ``dataset`` and ``missing`` (the names left unset) says what to give.
    """
    missing = [name for name, value in given.items() if value is None]
    if not missing:
        return dict(given)
    threat = default_threat(dataset)
    values = None if threat is None else defaults(threat)
    if values is None:
        raise ValueError(error.format(dataset=dataset, missing=missing))
    return {name: values[name] if value is None else value for name, value in given.items()}


def checked_threat(dataset: str | None, eps: Any, alpha: Any, steps: Any, method: str) -> Threat:
    """The PGD threat ``method`` trains against: eps, alpha and steps as given, unset ones from the dataset's.

    Each value is checked (positive; ``steps`` an integer). A dataset without a default threat
    model and an unset value is a ValueError naming the values ``method`` must be given.
    """
    error = "dataset {dataset!r} has no default threat model; give " + method + " {missing} explicitly"
    values = fill_defaults(dataset, {"eps": eps, "alpha": alpha, "steps": steps}, error)
    return Threat(
        eps=check_positive_float("eps", values["eps"]),
        alpha=check_positive_float("alpha", values["alpha"]),
        steps=check_positive_int("steps", values["steps"]),
    )
