"""An attack experiment on the zoo: the framework's protocol, run at the calibrated eps, once per zoo seed.

:func:`attack_experiment` makes an :class:`~hmcam.experiments.framework.Experiment` whose ``prepare``
trains (or reloads) the scale's zoo and loads the attacked images (:func:`hmcam.experiments.setup.bench`),
whose reports end with the calibration of eps, and whose runner (:func:`run_attack`) first calibrates
eps on held-out images (:func:`hmcam.experiments.calibration.calibrated`), then runs once per zoo seed
and judges the claims on all zoos together (:func:`hmcam.experiments.pooled.run_on_zoos`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, TypeAlias

from hmcam.experiments.calibration import calibrated
from hmcam.experiments.framework import Experiment, RunOptions, run_experiment
from hmcam.experiments.pooled import run_on_zoos
from hmcam.experiments.setup import ATTACK_SCALES, AttackScale, Bench, bench, calibration_text

#: An attack experiment, whatever its settings and jobs.
ZooExperiment: TypeAlias = Experiment[AttackScale, Any, Bench, Any]


def attack_bench(scale: AttackScale, settings: Any, options: RunOptions) -> Bench:
    """An attack experiment's ``prepare``: the scale's trained zoo and attacked images (:func:`bench`)."""
    return bench(scale, options)


def run_at(experiment: ZooExperiment, scale: AttackScale, options: RunOptions) -> dict[str, Any]:
    """Run at ``scale.eps`` as it is: once, or once per zoo seed with the claims judged on all zoos."""
    if len(scale.zoo_seeds) > 1:
        return run_on_zoos(partial(run_experiment, experiment), scale, options)
    return run_experiment(experiment, scale, options)


def run_attack(experiment: ZooExperiment, scale: AttackScale, options: RunOptions) -> dict[str, Any]:
    """Run at the scale's calibrated eps (:func:`~hmcam.experiments.calibration.calibrated`), per zoo."""
    return run_at(experiment, calibrated(scale, options), options)


def attack_experiment(**declared: Any) -> ZooExperiment:
    """An :class:`~hmcam.experiments.framework.Experiment` on the zoo at :data:`~hmcam.experiments.setup.ATTACK_SCALES`.

    ``declared`` are its own fields: name, settings, claims, jobs, key, compute, summarize.
    """
    return Experiment(scales=ATTACK_SCALES, prepare=attack_bench, notes=calibration_text, runner=run_attack, **declared)
