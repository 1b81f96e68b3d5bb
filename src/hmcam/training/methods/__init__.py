"""Training methods: the interface, the registry and the shipped methods (natural, PGD-AT)."""

from hmcam.training.methods.base import Batch, MethodOutput, MethodSetup, StepContext, StepMeter, TrainingMethod
from hmcam.training.methods.cat import CATCETraining, CATTraining
from hmcam.training.methods.fast import FastTraining as FastTraining
from hmcam.training.methods.free import FreeTraining as FreeTraining
from hmcam.training.methods.natural import NaturalTraining
from hmcam.training.methods.pgd import PGDTraining
from hmcam.training.methods.registry import METHODS, build_method, register_method
from hmcam.training.methods.trades import TRADESTraining as TRADESTraining
from hmcam.training.methods.yopo import YOPOTraining as YOPOTraining

__all__ = [
    "METHODS",
    "Batch",
    "CATCETraining",
    "CATTraining",
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
