"""Evaluation of attacks and defences: success rates, sequence metrics and robust evaluation.

:mod:`~hmcam.evaluation.metrics` scores adversarial examples that an attack returned;
:func:`evaluate_robustness` is the robust evaluation of a model: clean accuracy, robust accuracy
per attack and the per-example worst case over several attacks, fast (a cascade that attacks only
what is still robust), checked for gradient masking, resumable and shardable over processes.
"""

from hmcam.evaluation.metrics import all_success, any_success, predict, robust_accuracy, success_rate
from hmcam.evaluation.robust import (
    DEFAULT_ATTACKS,
    PER_ATTACK_NOTE,
    AttackReport,
    EvaluationConfig,
    RobustEvaluation,
    Stage,
    evaluate_robustness,
)
from hmcam.evaluation.state import EvaluationState

__all__ = [
    "DEFAULT_ATTACKS",
    "PER_ATTACK_NOTE",
    "AttackReport",
    "EvaluationConfig",
    "EvaluationState",
    "RobustEvaluation",
    "Stage",
    "all_success",
    "any_success",
    "evaluate_robustness",
    "predict",
    "robust_accuracy",
    "success_rate",
]
