"""Evaluation of attacks and defences: success rates, sequence metrics and robust evaluation.

:mod:`~hmcam.evaluation.metrics` scores adversarial examples that an attack returned;
:func:`evaluate_robustness` is the robust evaluation of a model: clean accuracy, robust accuracy
per attack and the per-example worst case over a suite of attacks (AutoAttack by default), fast
(a cascade that attacks only what is still robust), checked for gradient masking, resumable and
shardable over processes;
:func:`diagnose` says how well a chain attack samples (acceptance, ESS and R-hat from
:mod:`~hmcam.evaluation.mcmc`, diversity).
"""

from hmcam.evaluation.config import DEFAULT_ATTACKS, EvaluationConfig
from hmcam.evaluation.mcmc import effective_sample_size, rhat
from hmcam.evaluation.metrics import all_success, any_success, predict, robust_accuracy, success_rate
from hmcam.evaluation.result import PER_ATTACK_NOTE, AttackReport, RobustEvaluation
from hmcam.evaluation.robust import evaluate_robustness
from hmcam.evaluation.sampling import (
    ChainDiagnostics,
    diagnose,
    distinct_fraction,
    distinct_labels,
    label_entropy,
    mean_pairwise_distance,
)
from hmcam.evaluation.stages import Stage
from hmcam.evaluation.state import EvaluationState
from hmcam.evaluation.suites import DEFAULT_SUITE, SUITES, AttackSpec, Suite, get_suite

__all__ = [
    "AttackReport",
    "AttackSpec",
    "DEFAULT_SUITE",
    "SUITES",
    "Suite",
    "ChainDiagnostics",
    "DEFAULT_ATTACKS",
    "EvaluationConfig",
    "EvaluationState",
    "PER_ATTACK_NOTE",
    "RobustEvaluation",
    "Stage",
    "all_success",
    "any_success",
    "diagnose",
    "distinct_fraction",
    "distinct_labels",
    "effective_sample_size",
    "evaluate_robustness",
    "get_suite",
    "label_entropy",
    "mean_pairwise_distance",
    "predict",
    "rhat",
    "robust_accuracy",
    "success_rate",
]
