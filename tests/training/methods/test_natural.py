"""Natural training: the cross-entropy of the clean examples."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hmcam.models import build_model
from hmcam.training.methods import NaturalTraining, StepContext


def test_loss_is_the_clean_cross_entropy() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", hidden=(16,), mean=[0.5], std=[0.25])
    images, labels = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    context = StepContext(epoch=0, step=0, replay=0, indices=torch.arange(8))
    output = NaturalTraining().loss(model, images, labels, context)
    expected = model(images)
    assert torch.equal(output.logits, expected)
    assert torch.equal(output.loss, F.cross_entropy(expected, labels))
    assert output.stats == {}
