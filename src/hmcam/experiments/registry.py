"""The paper's experiments by name: what each reproduces and the function that runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hmcam.experiments.all_or_nothing import run_all_or_nothing
from hmcam.experiments.calibration import calibrated
from hmcam.experiments.diversity import run_diversity
from hmcam.experiments.ensemble import run_ensemble
from hmcam.experiments.few_sample import run_few_sample
from hmcam.experiments.iterations import run_iterations
from hmcam.experiments.pooled import run_on_zoos
from hmcam.experiments.setup import AttackScale, RunOptions
from hmcam.experiments.step_size import run_step_size
from hmcam.experiments.targeted import run_targeted
from hmcam.experiments.transfer import run_transfer


@dataclass(frozen=True)
class AttackExperiment:
    """An attack experiment: what of the paper it reproduces, and the function that runs it at a scale."""

    reproduces: str
    function: Callable[[AttackScale, RunOptions], dict[str, Any]]

    def run(self, scale: AttackScale, options: RunOptions) -> dict[str, Any]:
        """Run at the scale's calibrated eps (:func:`hmcam.experiments.calibration.calibrated`) into ``options.out``."""
        return self.run_at(calibrated(scale, options), options)

    def run_at(self, scale: AttackScale, options: RunOptions) -> dict[str, Any]:
        """Run at ``scale.eps`` as it is, into ``options.out``.

        A scale of several zoo seeds runs once per zoo and judges the claims on all of them
        (:func:`hmcam.experiments.pooled.run_on_zoos`).
        """
        if len(scale.zoo_seeds) > 1:
            return run_on_zoos(self.function, scale, options)
        return self.function(scale, options)


#: The attack experiments in the paper's order; each takes an :class:`~hmcam.experiments.setup.AttackScale`.
ATTACK_EXPERIMENTS: dict[str, AttackExperiment] = {
    "transfer": AttackExperiment("Table 2: white- and black-box success, sources x targets", run_transfer),
    "ensemble": AttackExperiment("Table 3: ensemble and hold-out success", run_ensemble),
    "iterations": AttackExperiment("Fig. 2: success against the number of iterations", run_iterations),
    "step-size": AttackExperiment("Fig. 3: success against the step size, and the eps cap", run_step_size),
    "diversity": AttackExperiment(
        "Fig. 1: diversity of many samples of one image, t-SNE, MCMC diagnostics", run_diversity
    ),
    "targeted": AttackExperiment("Table 8: targeted attacks on adversarially trained models", run_targeted),
    "all-or-nothing": AttackExperiment(
        "Table 9 analogue: feature-space attack judged all-or-nothing", run_all_or_nothing
    ),
    "few-sample": AttackExperiment("Fig. 4: adversarial training data from few images", run_few_sample),
}
