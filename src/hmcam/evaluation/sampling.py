"""How well a chain attack samples: acceptance, ESS and R-hat of its traces, and the diversity of its samples.

The paper calls HMCAM's output a *sequence* of adversarial examples drawn from a distribution;
these numbers say whether it is one. For each attacked example, with C chains of S samples
(:class:`~hmcam.attacks.chain.ChainResult`):

- acceptance: the fraction of proposals accepted at each transition;
- the *loss trace* (the objective J of each chain state) and the *success trace* (1 where the
  state fools the model) as ``[C, S]`` traces: their effective sample size and R-hat
  (:mod:`hmcam.evaluation.mcmc`; R-hat needs C >= 2, both need S >= 4);
- diversity over all C * S samples: distinct predicted labels, the entropy of the predicted labels
  (bits), the mean pairwise L2 distance between samples and the fraction of distinct samples.

A chain stuck on one point has a constant trace, whose ESS is the full count and whose R-hat is
undefined: read ESS together with the distinct-sample fraction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from hmcam.attacks.chain import ChainResult
from hmcam.evaluation.mcmc import MIN_DRAWS, effective_sample_size, rhat


def _pooled(values: Tensor, chains: int) -> Tensor:
    """[S, B, ...] or [S, C, B, ...] values as [C * S, B, ...]: every sample of an example, chain after chain."""
    if chains == 1:
        return values
    moved = values.transpose(0, 1)
    return moved.reshape(moved.shape[0] * moved.shape[1], *moved.shape[2:])


def _traces(values: Tensor, chains: int) -> Tensor:
    """[S, B] or [S, C, B] per-state scalars as [B, C, S] traces."""
    if chains == 1:
        return values.t().unsqueeze(1)
    return values.permute(2, 1, 0)


def distinct_labels(predictions: Tensor) -> Tensor:
    """Number of different classes among the predictions of each example's samples ([N, B] to [B])."""
    ordered = predictions.sort(dim=0).values
    return 1 + (ordered[1:] != ordered[:-1]).sum(dim=0)


def label_entropy(predictions: Tensor) -> Tensor:
    """Entropy in bits of the empirical distribution of each example's predicted labels ([N, B] to [B])."""
    classes = int(predictions.max()) + 1
    counts = torch.zeros(classes, predictions.shape[1], device=predictions.device).scatter_add_(
        0, predictions.long(), torch.ones(predictions.shape, device=predictions.device)
    )
    share = counts / predictions.shape[0]
    return -(share * torch.log2(share.clamp_min(1e-30))).sum(dim=0)


def mean_pairwise_distance(samples: Tensor) -> Tensor:
    """Mean L2 distance over the pairs of each example's samples ([N, B, ...] to [B]; 0 for one sample)."""
    count = samples.shape[0]
    if count < 2:
        return samples.new_zeros(samples.shape[1])
    flat = samples.flatten(2).transpose(0, 1).float()  # [B, N, D]
    distances = torch.cdist(flat, flat)
    return distances.sum(dim=(1, 2)) / (count * (count - 1))


def distinct_fraction(samples: Tensor) -> Tensor:
    """Fraction of each example's samples that differ from every earlier one ([N, B, ...] to [B])."""
    flat = samples.flatten(2)  # [N, B, D]
    repeated = torch.zeros(flat.shape[:2], dtype=torch.bool, device=samples.device)
    # One sample at a time against the earlier ones keeps memory at N * B * D, not N^2 * B * D.
    for index in range(1, flat.shape[0]):
        repeated[index] = (flat[:index] == flat[index]).all(dim=2).any(dim=0)
    return 1 - repeated.float().mean(dim=0)


@dataclass(frozen=True)
class ChainDiagnostics:
    """Per-example sampling diagnostics of a chain attack (see the module docstring); NaN where undefined.

    ``accepted`` is [S], the proposals accepted at each transition (summed over chains and examples),
    out of ``proposals`` per transition; every other field is [B].
    """

    accepted: Tensor
    proposals: int
    loss_ess: Tensor
    loss_rhat: Tensor
    success_ess: Tensor
    success_rhat: Tensor
    distinct_labels: Tensor
    label_entropy: Tensor
    pairwise_distance: Tensor
    distinct_samples: Tensor

    @staticmethod
    def join(parts: Sequence[ChainDiagnostics]) -> ChainDiagnostics:
        """The diagnostics of several batches of one attack run, as if computed on their union."""
        if not parts:
            raise ValueError("nothing to join: no diagnostics were computed")
        joined: dict[str, Any] = {
            "accepted": torch.stack([part.accepted for part in parts]).sum(dim=0),
            "proposals": sum(part.proposals for part in parts),
        }
        for field in fields(ChainDiagnostics):
            if field.name not in joined:
                joined[field.name] = torch.cat([getattr(part, field.name) for part in parts])
        return ChainDiagnostics(**joined)

    def summary(self) -> dict[str, Any]:
        """Means over examples (medians for ESS and R-hat, with the share of R-hat above 1.01), JSON-ready."""

        def mean(values: Tensor) -> float | None:
            kept = values[~values.isnan()]
            return float(kept.float().mean()) if kept.numel() else None

        def median(values: Tensor) -> float | None:
            kept = values[~values.isnan()]
            return float(kept.float().median()) if kept.numel() else None

        def above(values: Tensor) -> float | None:
            kept = values[~values.isnan()]
            return float((kept > 1.01).float().mean()) if kept.numel() else None

        rates = (self.accepted.float() / self.proposals).tolist()
        return {
            "acceptance_rate": float(self.accepted.sum()) / (self.proposals * len(rates)),
            "acceptance_per_transition": [round(rate, 4) for rate in rates],
            "loss_ess_median": median(self.loss_ess),
            "loss_rhat_median": median(self.loss_rhat),
            "loss_rhat_above_1.01": above(self.loss_rhat),
            "success_ess_median": median(self.success_ess),
            "success_rhat_median": median(self.success_rhat),
            "distinct_labels": mean(self.distinct_labels),
            "label_entropy_bits": mean(self.label_entropy),
            "mean_pairwise_l2": mean(self.pairwise_distance),
            "distinct_samples": mean(self.distinct_samples),
        }


def diagnose(result: ChainResult) -> ChainDiagnostics:
    """The :class:`ChainDiagnostics` of one ``sample()`` result; NaN where undefined.

    ESS and R-hat are NaN when S < 4 (R-hat also when C < 2), the distances when the samples were
    streamed to disk rather than kept.
    """
    chains = result.chains
    batch = result.accepted.shape[-1]

    def trace_statistics(values: Tensor) -> tuple[Tensor, Tensor]:
        traces = _traces(values, chains).double().cpu()
        draws = traces.shape[2]
        ess = [effective_sample_size(trace) if draws >= MIN_DRAWS else math.nan for trace in traces]
        spread = [rhat(trace) if draws >= MIN_DRAWS and chains >= 2 else math.nan for trace in traces]
        return torch.tensor(ess, dtype=torch.float64), torch.tensor(spread, dtype=torch.float64)

    loss_ess, loss_rhat = trace_statistics(result.objective)
    success_ess, success_rhat = trace_statistics(result.success.float())
    samples = _pooled(result.samples, chains)
    predictions = _pooled(result.prediction, chains)
    # Samples streamed to disk (``sample(..., sink=...)``) leave no pixels to measure distances on.
    streamed = samples[0, 0].numel() == 0
    unmeasured = torch.full((batch,), math.nan, dtype=torch.float64)
    accepted = result.accepted.flatten(1).sum(dim=1).cpu()
    return ChainDiagnostics(
        accepted=accepted,
        proposals=chains * batch,
        loss_ess=loss_ess,
        loss_rhat=loss_rhat,
        success_ess=success_ess,
        success_rhat=success_rhat,
        distinct_labels=distinct_labels(predictions).cpu().double(),
        label_entropy=label_entropy(predictions).cpu().double(),
        pairwise_distance=unmeasured if streamed else mean_pairwise_distance(samples).cpu().double(),
        distinct_samples=unmeasured if streamed else distinct_fraction(samples).cpu().double(),
    )
