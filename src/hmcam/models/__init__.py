"""Network architectures, model wrappers and checkpoints."""

from hmcam.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hmcam.models.imagenet import MissingDependencyError
from hmcam.models.registry import MODELS, ModelSpec, build_model, get_spec
from hmcam.models.split import CapturedOutput, FirstLayerSplit, split_first_layer
from hmcam.models.wrappers import Ensemble, Normalize

__all__ = [
    "MODELS",
    "CapturedOutput",
    "CheckpointError",
    "Ensemble",
    "FirstLayerSplit",
    "MissingDependencyError",
    "ModelSpec",
    "Normalize",
    "build_model",
    "get_spec",
    "load_checkpoint",
    "save_checkpoint",
    "split_first_layer",
]
