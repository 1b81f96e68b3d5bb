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


class FirstFeature(nn.Module):
    """Predicts class round(9 * x.flatten(1)[:, 0]) for inputs of any example shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot((x.flatten(1)[:, 0] * 9).round().long(), 10).float()


@pytest.mark.parametrize("example_shape", [(4,), (3, 3), (2, 2, 2), (3, 2, 2, 2)])
def test_sequence_metrics_for_any_example_shape(example_shape) -> None:
    # [B, F] and [B, H, W] inputs crashed, and a rank-based guess misread [B, C, H, W] when C == B.
    y = torch.tensor([1, 2, 3])
    x = torch.zeros(3, *example_shape)
    x.view(3, -1)[:, 0] = y / 9
    first, second = x.clone(), x.clone()
    first.view(3, -1)[0, 0] = 5 / 9
    second.view(3, -1)[:2, 0] = torch.tensor([5.0, 6.0]) / 9
    samples = torch.stack([first, second])
    assert any_success(FirstFeature(), x, samples, y) == pytest.approx(2 / 3)
    assert all_success(FirstFeature(), x, samples, y) == pytest.approx(1 / 3)


def test_predict_uses_the_given_sample_dimensions() -> None:
    from hmcam.evaluation import predict

    x = torch.zeros(2, 3, 3, 1, 1)  # [S, B, C, H, W] with C == B: the rank alone cannot tell
    x[:, :, 0] = torch.tensor([[1.0, 2, 3], [4, 5, 6]])[..., None, None] / 9
    assert predict(FirstFeature(), x, sample_dims=1).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert predict(FirstFeature(), x[0]).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="no batch dimension"):
        predict(FirstFeature(), torch.zeros(3), sample_dims=1)
