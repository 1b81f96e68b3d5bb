"""``robustbench.json``: an evaluation in RobustBench's ``model_info`` layout, for the leaderboard.

RobustBench describes each model of its leaderboard with a JSON file
(``model_info/<dataset>/<threat model>/<name>.json``) holding ``link``, ``name``, ``authors``,
``additional_data``, ``number_forward_passes``, ``dataset``, ``venue``, ``architecture``, ``eps``
(``"8/255"``, or ``"0.5"``), ``clean_acc``, ``reported``, ``autoattack_acc`` (percentages written as
strings with two decimals), ``footnote`` and ``unreliable``. :func:`robustbench_info` fills that layout
from a :class:`~hmcam.evaluation.result.RobustEvaluation`; what an evaluation cannot know (the paper,
its authors and venue, extra training data, the number the paper reported) is ``null``, to be filled by
whoever submits.

``autoattack_acc`` holds a number only when the suite was ``autoattack`` (the standard version the
leaderboard ranks by); under any other suite it is ``null`` and ``robust_acc`` holds the robust
accuracy under the attacks that ran, with ``attack_suite`` naming them, so that no number is ever
labelled AutoAttack that is not. Besides the layout's own keys the file records the threat model,
the number of examples, the suite with its attacks and settings, and the exact eps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hmcam.core.version import __version__
from hmcam.evaluation.suites import SUITES

if TYPE_CHECKING:
    from hmcam.evaluation.result import RobustEvaluation

#: The file name in an evaluation's run folder.
ROBUSTBENCH_FILE = "robustbench.json"
#: The suite whose robust accuracy the leaderboard reports as ``autoattack_acc``.
AUTOATTACK_SUITE = "autoattack"
#: The keys of RobustBench's ``model_info`` files, in their order.
MODEL_INFO_KEYS = (
    "link",
    "name",
    "authors",
    "additional_data",
    "number_forward_passes",
    "dataset",
    "venue",
    "architecture",
    "eps",
    "clean_acc",
    "reported",
    "autoattack_acc",
    "footnote",
    "unreliable",
)
#: hmcam's norms as RobustBench names its threat models.
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
#: RobustBench's names of the datasets it ranks, by hmcam's dataset names.
DATASET_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet"}


def format_eps(eps: float) -> str:
    """``eps`` as RobustBench writes it: ``"8/255"`` for a multiple of 1/255 below 1, else the number (``"0.5"``)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    steps = round(eps * 255)
    if 1 <= steps < 255 and math.isclose(eps, steps / 255, rel_tol=1e-9, abs_tol=0.0):
        return f"{steps}/255"
    return repr(float(eps))


def format_accuracy(fraction: float) -> str:
    """A fraction as RobustBench writes an accuracy: a percentage with two decimals, as a string (``"59.53"``)."""
    return f"{100 * fraction:.2f}"


def threat_model(norm: str) -> str:
    """RobustBench's name of the threat model of ``norm`` (``linf`` -> ``Linf``)."""
    try:
        return THREAT_MODELS[norm]
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(THREAT_MODELS)}") from None


def robustbench_info(result: RobustEvaluation, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``robustbench.json`` for ``result`` (see the module docstring).

    ``extra`` is what the caller knows of the model: ``name`` (else ``checkpoint``, the file it came
    from), ``dataset``, ``architecture``, ``link``, ``authors``, ``venue``, ``additional_data`` and
    ``reported``; anything absent is ``null``.
    """
    extra = dict(extra or {})
    config = result.config
    autoattack = config.suite == AUTOATTACK_SUITE
    robust = format_accuracy(result.robust_accuracy)
    suite = SUITES.get(config.suite)
    described = suite.description if suite is not None else f"the attacks {', '.join(config.attacks)}"
    dataset = extra.get("dataset")
    footnote = (
        f"Evaluated by hmcam {__version__} on {config.examples} examples"
        + (f" of {dataset}" if dataset else "")
        + f" with {described}"
        + ("" if autoattack else "; robust_acc is NOT AutoAttack accuracy")
        + "."
    )
    info: dict[str, Any] = {
        "link": extra.get("link"),
        "name": extra.get("name") or (str(extra["checkpoint"]) if extra.get("checkpoint") else None),
        "authors": extra.get("authors"),
        "additional_data": extra.get("additional_data"),
        "number_forward_passes": 1,
        "dataset": DATASET_NAMES.get(str(dataset), dataset),
        "venue": extra.get("venue"),
        "architecture": extra.get("architecture"),
        "eps": format_eps(config.eps),
        "clean_acc": format_accuracy(result.clean_accuracy),
        "reported": extra.get("reported"),
        "autoattack_acc": robust if autoattack else None,
        "footnote": footnote,
        "unreliable": bool(result.warnings),
    }
    info.update(
        {
            "robust_acc": robust,
            "attack_suite": config.suite,
            "threat_model": threat_model(config.norm),
            "eps_value": config.eps,
            "n_examples": config.examples,
            "suite_settings": {
                "description": described,
                "attacks": [spec.to_dict() for spec in config.specs],
                "steps": config.steps,
                "restarts": config.restarts,
                "alpha": config.alpha,
                "mode": "standalone" if config.standalone else "cascade",
                "seed": config.seed,
            },
            "warnings": list(result.warnings),
            "evaluated_by": f"hmcam {__version__}",
        }
    )
    return info
