"""ImageNet ResNet-50 and ResNet-152 (He et al. 2016), built through torchvision.

The paper trains ResNet-50 with CAT on ImageNet (Table 6) and attacks ResNet-152 based models
(Table 8). torchvision is an optional dependency (``hmcam[vision]``): it is imported only when one of
these networks is built, and its absence or a broken install becomes a :class:`MissingDependencyError`
that says how to fix it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from torch import nn


class MissingDependencyError(ImportError):
    """An optional dependency needed for the requested feature is not installed or cannot be imported."""


def require_torchvision() -> ModuleType:
    """Import and return ``torchvision.models``, or raise :class:`MissingDependencyError` saying how to fix it."""
    try:
        return importlib.import_module("torchvision.models")
    except ModuleNotFoundError as error:
        if error.name not in ("torchvision", "torchvision.models"):
            raise MissingDependencyError(
                f"torchvision is installed but its dependency {error.name!r} is missing ({error}); "
                "reinstall with: pip install 'hmcam[vision]'"
            ) from error
        raise MissingDependencyError(
            "the ImageNet models need torchvision, which is not installed; "
            "install the extra with: pip install 'hmcam[vision]'"
        ) from error
    except Exception as error:  # a torchvision built for another torch fails with RuntimeError etc.
        raise MissingDependencyError(
            f"torchvision is installed but could not be imported ({type(error).__name__}: {error}); "
            f"install a torchvision that matches torch {torch.__version__} with: pip install 'hmcam[vision]'"
        ) from error


def _torchvision_resnet(depth: int, num_classes: int, in_channels: int) -> nn.Module:
    models = require_torchvision()
    model: nn.Module = getattr(models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    if in_channels != 3:
        # Same 7x7 stride-2 stem, only the input channels differ.
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """Torchvision ResNet-50 (randomly initialized): the paper's ImageNet CAT model (Table 6)."""
    return _torchvision_resnet(50, num_classes, in_channels)


def resnet152(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """Torchvision ResNet-152 (randomly initialized): the backbone of the paper's CAAD targets (Table 8)."""
    return _torchvision_resnet(152, num_classes, in_channels)
