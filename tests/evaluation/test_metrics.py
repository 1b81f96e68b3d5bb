"""Success rates and robust accuracy on a model whose predictions are set by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmcam.evaluation import all_success, any_success, robust_accuracy, success_rate


class PixelVote(nn.Module):
    """Predicts class round(9 * x[0, 0, 0]): the label is written into the first pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = (x[:, 0, 0, 0] * 9).round().long()
        return nn.functional.one_hot(label, 10).float()


def images(labels: list[int]) -> torch.Tensor:
    x = torch.zeros(len(labels), 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.float32) / 9
    return x


def test_success_rate_counts_only_correct_clean_examples() -> None:
    model = PixelVote()
    y = torch.tensor([1, 2, 3, 4])
    x = images([1, 2, 3, 5])  # the last one is already wrong
    adversarial = images([1, 7, 8, 5])  # two of the three correct ones flip
    assert success_rate(model, x, adversarial, y) == pytest.approx(2 / 3)
    assert robust_accuracy(model, adversarial, y) == pytest.approx(1 / 4)
    assert success_rate(model, x, adversarial, torch.tensor([7, 7, 8, 0]), targeted=True) == pytest.approx(2 / 4)


def test_sequence_metrics_any_and_all() -> None:
    model = PixelVote()
    y = torch.tensor([1, 2, 3])
    x = images([1, 2, 3])
    samples = torch.stack([images([5, 2, 3]), images([5, 6, 3])])
    assert any_success(model, x, samples, y) == pytest.approx(2 / 3)
    assert all_success(model, x, samples, y) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"samples must be \[S"):
        any_success(model, x, samples[0], y)


def test_undefined_success_rate_is_an_error() -> None:
    with pytest.raises(ValueError, match="misclassifies every clean example"):
        success_rate(PixelVote(), images([1]), images([1]), torch.tensor([2]))
