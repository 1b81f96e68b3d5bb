"""Natural training: minimize the cross-entropy of the clean examples (Eq. 12)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from hmcam.training.methods.base import MethodOutput, StepContext, TrainingMethod
from hmcam.training.methods.registry import register_method


@register_method
class NaturalTraining(TrainingMethod):
    """Standard empirical risk minimization, the paper's "Natural train" baseline (Tables 4-5)."""

    name = "natural"
    adversarial = False

    @override
    def loss(self, model: nn.Module, images: Tensor, labels: Tensor, context: StepContext) -> MethodOutput:
        """Cross-entropy of ``model`` on the clean ``images``."""
        logits = model(images)
        return MethodOutput(F.cross_entropy(logits, labels), logits, {})
