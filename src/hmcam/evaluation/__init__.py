"""Evaluation of attacks and defences: success rates, robust accuracy, sequence metrics."""

from hmcam.evaluation.metrics import all_success, any_success, predict, robust_accuracy, success_rate

__all__ = ["all_success", "any_success", "predict", "robust_accuracy", "success_rate"]
