"""Training methods: the interface, the registry and the shipped methods (natural, PGD-AT)."""

from hmcam.training.methods.base import Batch, MethodOutput, MethodSetup, StepContext, StepMeter, TrainingMethod
from hmcam.training.methods.natural import NaturalTraining
from hmcam.training.methods.pgd import PGDTraining
from hmcam.training.methods.registry import METHODS, build_method, register_method

__all__ = [
    "METHODS",
    "Batch",
    "MethodOutput",
    "MethodSetup",
    "NaturalTraining",
    "PGDTraining",
    "StepContext",
    "StepMeter",
    "TrainingMethod",
    "build_method",
    "register_method",
]
