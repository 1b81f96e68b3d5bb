"""Success and robustness metrics, for single adversarial examples and for sampled sequences."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hmcam.attacks.hygiene import attack_mode


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted labels of ``model`` for ``x`` (any leading shape [..., C, H, W] is flattened), in eval mode."""
    flat = x.reshape(-1, *x.shape[-3:]) if x.dim() > 4 else x
    with attack_mode(model), torch.no_grad():
        labels = torch.cat([model(chunk).argmax(dim=1) for chunk in flat.split(batch_size)])
    return labels.reshape(x.shape[: x.dim() - 3]) if x.dim() > 4 else labels


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
        raise ValueError(f"samples must be [S, *x.shape] = [S, {', '.join(map(str, x.shape))}], got {tuple(samples.shape)}")
    hits = _hits(predict(model, samples), y.expand(samples.shape[0], -1), targeted)
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
