"""Model wrappers that keep every attack in pixel space: input normalization and ensembles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

ENSEMBLE_MODES = ("logits", "probs", "loss")


class Normalize(nn.Module):
    """Wrap a network trained on normalized inputs so that it takes pixels in [0, 1].

    The wrapper computes ``model((x - mean) / std)`` with per-channel ``mean`` and ``std``; attacks
    then define the eps-ball and the clipping in pixel space, which is where the paper's
    N(x) = {||x' - x|| <= eps} lives (Eq. 5), and never need a denormalize round trip.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the wrapped model for pixels ``x`` ``[B, C, H, W]`` in [0, 1]."""
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"Normalize expects [B, {self.mean.shape[1]}, H, W] input, got shape {tuple(x.shape)}")
        mean = self.mean.to(dtype=x.dtype)
        std = self.std.to(dtype=x.dtype)
        logits: Tensor = self.model((x - mean) / std)
        return logits


class Ensemble(nn.Module):
    """An ensemble of classifiers that any attack can target, as in the paper's section 5.3.

    ``mode="logits"`` averages the members' logits (Dong et al.'s logit fusion), ``"probs"`` averages
    their softmax probabilities and returns the log of the mean (valid logits for cross-entropy), and
    ``"loss"`` makes attacks ascend the weighted sum of the members' losses; in that mode the forward
    pass, used for predictions, averages logits. Weights are equal by default and are normalized to
    sum to one.
    """

    weights: Tensor

    def __init__(
        self,
        models: Sequence[nn.Module],
        weights: Sequence[float] | None = None,
        mode: str = "logits",
    ) -> None:
        super().__init__()
        if len(models) == 0:
            raise ValueError("an Ensemble needs at least one model")
        if mode not in ENSEMBLE_MODES:
            raise ValueError(f"unknown ensemble mode {mode!r}; choose one of {ENSEMBLE_MODES}")
        if weights is None:
            weights = [1.0] * len(models)
        if len(weights) != len(models):
            raise ValueError(f"{len(models)} models but {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"ensemble weights must be non-negative with a positive sum, got {list(weights)}")
        total = float(sum(weights))
        self.members = nn.ModuleList(models)
        self.mode = mode
        self.register_buffer("weights", torch.tensor([w / total for w in weights], dtype=torch.float32))

    def member_logits(self, x: Tensor) -> list[Tensor]:
        """Each member's logits for ``x``, in the order the models were given."""
        return [member(x) for member in self.members]

    def combine(self, values: Sequence[Tensor]) -> Tensor:
        """Weighted sum of per-member tensors (logits, probabilities or per-example losses)."""
        weights = self.weights.to(dtype=values[0].dtype)
        # The values are tensors, so the sum is one (typeshed types it as "tensor or the int 0").
        return cast(Tensor, sum(w * v for w, v in zip(weights, values, strict=True)))

    def forward(self, x: Tensor) -> Tensor:
        """The weighted mean of the members' logits (in ``"probs"`` mode the log of the mean probabilities)."""
        logits = self.member_logits(x)
        if self.mode == "probs":
            probs = self.combine([member.softmax(dim=1) for member in logits])
            return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        return self.combine(logits)
