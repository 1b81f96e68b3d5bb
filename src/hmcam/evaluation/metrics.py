"""Success and robustness metrics, for single adversarial examples and for sampled sequences."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hmcam.attacks.hygiene import attack_mode


def predict(model: nn.Module, x: Tensor, batch_size: int = 512, *, sample_dims: int = 0) -> Tensor:
    """Predicted labels of ``model`` for ``x``, in eval mode, ``batch_size`` examples at a time.

    ``x`` is [B, ...] (any example shape: [C, H, W], [H, W], flat features), or, with
    ``sample_dims=k``, k leading sample dimensions before the batch ([S, B, ...] for a chain's
    samples with k = 1); the labels have the shape of those leading dimensions and the batch. The
    sample dimensions are given, never guessed from the rank, which is ambiguous when C equals B.
    """
    if sample_dims < 0 or x.dim() < sample_dims + 1:
        raise ValueError(f"x of shape {tuple(x.shape)} has no batch dimension after {sample_dims} sample dimensions")
    leading = x.shape[: sample_dims + 1]
    flat = x.reshape(-1, *x.shape[sample_dims + 1 :])
    with attack_mode(model), torch.no_grad():
        labels = torch.cat([model(chunk).argmax(dim=1) for chunk in torch.split(flat, batch_size)])
    return labels.reshape(leading)


def _hits(predicted: Tensor, y: Tensor, targeted: bool) -> Tensor:
    return predicted == y if targeted else predicted != y


def success_rate(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, *, targeted: bool = False) -> float:
    """Attack success rate as the paper reports it (Tables 2-3).

    Untargeted: among the examples the model classifies correctly, the fraction whose adversarial
    example is misclassified. Targeted (``y`` holds targets): the fraction that hit their target.
    """
    adversarial = predict(model, x_adv)
    if targeted:
        return float((adversarial == y).float().mean())
    correct = predict(model, x) == y
    if not correct.any():
        raise ValueError("the model misclassifies every clean example; the success rate is undefined")
    return float((adversarial != y)[correct].float().mean())


def robust_accuracy(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    """Fraction of adversarial examples still classified as their true label."""
    return float((predict(model, x_adv) == y).float().mean())


def _sequence_success(model: nn.Module, x: Tensor, samples: Tensor, y: Tensor, targeted: bool) -> tuple[Tensor, Tensor]:
    if samples.dim() != x.dim() + 1 or samples.shape[1:] != x.shape:
        raise ValueError(
            f"samples must be [S, *x.shape] = [S, {', '.join(map(str, x.shape))}], got {tuple(samples.shape)}"
        )
    hits = _hits(predict(model, samples, sample_dims=1), y.expand(samples.shape[0], -1), targeted)
    eligible = torch.ones_like(y, dtype=torch.bool) if targeted else predict(model, x) == y
    if not eligible.any():
        raise ValueError("the model misclassifies every clean example; the success rate is undefined")
    return hits, eligible


def any_success(model: nn.Module, x: Tensor, samples: Tensor, y: Tensor, *, targeted: bool = False) -> float:
    """Fraction of (eligible) examples for which at least one sample of the sequence succeeds."""
    hits, eligible = _sequence_success(model, x, samples, y, targeted)
    return float(hits.any(dim=0)[eligible].float().mean())


def all_success(model: nn.Module, x: Tensor, samples: Tensor, y: Tensor, *, targeted: bool = False) -> float:
    """The paper's "all-or-nothing" rate: every sample of the sequence must succeed."""
    hits, eligible = _sequence_success(model, x, samples, y, targeted)
    return float(hits.all(dim=0)[eligible].float().mean())
