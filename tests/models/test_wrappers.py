"""Normalize and Ensemble: pixel-space wrappers that every attack can target."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmcam import Ensemble, Normalize


def test_normalize_applies_mean_and_std_per_channel() -> None:
    inner = nn.Identity()
    wrapped = Normalize(inner, mean=(0.5, 0.25), std=(0.5, 0.25))
    x = torch.tensor([1.0, 0.5]).reshape(1, 2, 1, 1)
    torch.testing.assert_close(wrapped(x), torch.tensor([1.0, 1.0]).reshape(1, 2, 1, 1))
    with pytest.raises(ValueError, match="expects \\[B, 2, H, W\\]"):
        wrapped(torch.zeros(1, 3, 1, 1))
    with pytest.raises(ValueError, match="std must be positive"):
        Normalize(inner, (0.0,), (0.0,))


class Constant(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_ensemble_modes_by_hand() -> None:
    a, b = Constant([2.0, 0.0]), Constant([0.0, 4.0])
    x = torch.zeros(1, 1, 1, 1)
    torch.testing.assert_close(Ensemble([a, b])(x), torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(Ensemble([a, b], weights=[3, 1])(x), torch.tensor([[1.5, 1.0]]))
    probs = (torch.tensor([2.0, 0.0]).softmax(0) + torch.tensor([0.0, 4.0]).softmax(0)) / 2
    torch.testing.assert_close(Ensemble([a, b], mode="probs")(x), probs.log()[None])
    with pytest.raises(ValueError, match="unknown ensemble mode"):
        Ensemble([a], mode="vote")
    with pytest.raises(ValueError, match="2 models but 1 weights"):
        Ensemble([a, b], weights=[1.0])
