"""Network architectures, model wrappers and checkpoints."""

from hmcam.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hmcam.models.imagenet import MissingDependencyError
from hmcam.models.registry import MODELS, ModelSpec, build_model, get_spec
from hmcam.models.wrappers import Ensemble, Normalize

__all__ = [
    "MODELS",
    "CheckpointError",
    "Ensemble",
    "MissingDependencyError",
    "ModelSpec",
    "Normalize",
    "build_model",
    "get_spec",
    "load_checkpoint",
    "save_checkpoint",
]
