"""The one registry of experiments: what of the paper each reproduces, where it lives, in the paper's order.

The command line (``hmcam experiment``, ``hmcam demo``), ``hmcam reproduce`` and the docs all read
:data:`EXPERIMENTS`. An entry names the module whose ``EXPERIMENT``
(:class:`~hmcam.experiments.framework.Experiment`) runs it; the module is imported only when the
experiment is loaded, so that listing the experiments stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the registry is read by `hmcam --help`, which should not load the experiments
    from hmcam.experiments.framework import Experiment


@dataclass(frozen=True)
class Entry:
    """An experiment: what of the paper it reproduces, its module, its kind, and whether ``hmcam reproduce`` runs it.

    ``kind`` says which scales and command-line options it takes: ``attack`` (an
    :class:`~hmcam.experiments.setup.AttackScale` on the zoo), ``training`` (the training comparison's
    scale) or ``tour`` (the demo).
    """

    reproduces: str
    module: str
    kind: Literal["attack", "training", "tour"] = "attack"
    reproduced: bool = True

    def load(self) -> Experiment[Any, Any, Any, Any]:
        """The module's ``EXPERIMENT``."""
        experiment: Experiment[Any, Any, Any, Any] = importlib.import_module(self.module).EXPERIMENT
        return experiment


#: Every experiment by name, in the order of the paper's Section 5 (attacks, 5.2, then learning, 5.3 to 5.6),
#: which is the order ``hmcam reproduce`` runs them in; the demo last.
EXPERIMENTS: dict[str, Entry] = {
    "transfer": Entry(
        "Table 2: white- and black-box success of five attacks, sources x targets", "hmcam.experiments.transfer"
    ),
    "ensemble": Entry(
        "Table 3: attack an ensemble, success on it and on the held-out model", "hmcam.experiments.ensemble"
    ),
    "iterations": Entry(
        "Fig. 2: success of M-PGD and HMCAM against the number of iterations", "hmcam.experiments.iterations"
    ),
    "step-size": Entry(
        "Fig. 3: success against the step size, and the fraction of steps capped at eps", "hmcam.experiments.step_size"
    ),
    "diversity": Entry(
        "Fig. 1: diversity of many samples of one image (t-SNE), ESS and R-hat", "hmcam.experiments.diversity"
    ),
    "at-efficiency": Entry(
        "Tables 4, 5, 7 and Fig. 5: adversarial training methods at equal cost, with a budget sweep",
        "hmcam.experiments.at_efficiency",
        kind="training",
    ),
    "few-sample": Entry(
        "Fig. 4: adversarial training data from d images (HMCAM: S samples each) against d S images",
        "hmcam.experiments.few_sample",
    ),
    "targeted": Entry(
        "Table 8: targeted attacks with 10 and 100 steps on adversarially trained models",
        "hmcam.experiments.targeted",
    ),
    "all-or-nothing": Entry(
        "Table 9 analogue: targeted feature-space attack, success only if all samples succeed",
        "hmcam.experiments.all_or_nothing",
    ),
    "demo": Entry(
        "The tour: two models trained, eps calibrated, five attacks white- and black-box, HMCAM's chains diagnosed",
        "hmcam.experiments.demo",
        kind="tour",
        reproduced=False,
    ),
}
#: The experiments ``hmcam reproduce`` runs, in order.
REPRODUCED = tuple(name for name, entry in EXPERIMENTS.items() if entry.reproduced)
#: The names every experiment's scales share.
SCALE_NAMES = ("smoke", "small", "paper")
