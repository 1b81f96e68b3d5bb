"""Adversarial and natural training: one trainer, pluggable methods, exact resume, multi-process.

``train(TrainConfig(...), resume=False)`` runs a training method (``natural``, ``pgd``, or any
registered :class:`TrainingMethod`) and writes a run folder with per-epoch metrics, checkpoints, a
resumable trainer state and curves. ``python -m hmcam.training --epochs 3 ...`` is the same as a
script, and under ``torchrun --nproc_per_node=K`` it trains with DistributedDataParallel.
"""

from hmcam.training.config import TrainConfig
from hmcam.training.methods import (
    METHODS,
    MethodOutput,
    NaturalTraining,
    PGDTraining,
    StepContext,
    TrainingMethod,
    build_method,
    register_method,
)
from hmcam.training.schedules import SCHEDULES, Schedule
from hmcam.training.threat import THREATS, Threat, default_threat
from hmcam.training.trainer import Trainer, train

__all__ = [
    "METHODS",
    "MethodOutput",
    "NaturalTraining",
    "PGDTraining",
    "SCHEDULES",
    "Schedule",
    "StepContext",
    "THREATS",
    "Threat",
    "TrainConfig",
    "Trainer",
    "TrainingMethod",
    "build_method",
    "default_threat",
    "register_method",
    "train",
]
