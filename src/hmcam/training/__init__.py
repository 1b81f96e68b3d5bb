"""Adversarial and natural training: one trainer, pluggable methods, exact resume, multi-process.

``train(TrainConfig(...), resume=False)`` runs a training method (``natural``, ``pgd``, or any
registered :class:`TrainingMethod`) and writes a run folder with per-epoch metrics, checkpoints, a
resumable trainer state and curves. A method decides what it does with each minibatch
(:meth:`TrainingMethod.train_step`) and may keep per-example state in the trainer's
:class:`ExampleState`; see :mod:`hmcam.training.methods.base` for the interface. ``hmcam train`` is
the same on the command line, and under ``torchrun --nproc_per_node=K`` the K processes train
together with DistributedDataParallel.
"""

from hmcam.training.augment import AUGMENTATIONS, Augmentation
from hmcam.training.config import TrainConfig
from hmcam.training.examples import ExampleState
from hmcam.training.failures import TrainingCollapsed, TrainingCollapseWarning
from hmcam.training.methods import (
    METHODS,
    Batch,
    MethodOutput,
    MethodSetup,
    NaturalTraining,
    PGDTraining,
    StepContext,
    StepMeter,
    TrainingMethod,
    build_method,
    register_method,
)
from hmcam.training.schedules import SCHEDULES, Schedule
from hmcam.training.threat import THREATS, Threat, default_threat
from hmcam.training.trainer import Trainer, train

__all__ = [
    "AUGMENTATIONS",
    "METHODS",
    "SCHEDULES",
    "THREATS",
    "Augmentation",
    "Batch",
    "ExampleState",
    "MethodOutput",
    "MethodSetup",
    "NaturalTraining",
    "PGDTraining",
    "Schedule",
    "StepContext",
    "StepMeter",
    "Threat",
    "TrainConfig",
    "Trainer",
    "TrainingCollapseWarning",
    "TrainingCollapsed",
    "TrainingMethod",
    "build_method",
    "default_threat",
    "register_method",
    "train",
]
