"""Markov chains of adversarial examples: the Metropolis-Hastings test and the sampled sequence."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from hmcam.attacks.base import Attack, Ball


def metropolis_hastings(log_ratio: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Accept each example with probability ``min(1, exp(log_ratio))``; returns (accepted, probability).

    One uniform draw per example, so a whole example is accepted or rejected (never single pixels,
    as the authors' code does). A NaN ratio is rejected.
    """
    probability = torch.exp(log_ratio.clamp(max=0.0))
    draw = torch.rand(log_ratio.shape, generator=generator, device=log_ratio.device, dtype=log_ratio.dtype)
    return draw < probability, probability


@dataclass(frozen=True)
class ChainResult:
    """The sequence of chain states an MCMC attack returns (Algorithm 2, line 22).

    ``samples`` is [S, B, ...]: the chain state after each of the S transitions (a rejected
    transition repeats the previous state, as MCMC must). ``accepted``, ``acceptance_probability``,
    ``energy`` (H of the state), ``proposal_energy`` (H of the candidate) and ``success`` are [S, B].
    """

    samples: Tensor
    accepted: Tensor
    acceptance_probability: Tensor
    energy: Tensor
    proposal_energy: Tensor
    success: Tensor

    @property
    def acceptance_rate(self) -> float:
        """Fraction of accepted transitions over all chains and steps."""
        return float(self.accepted.float().mean())


class ChainRecorder:
    """Collects one chain step at a time and stacks the steps into a :class:`ChainResult`."""

    def __init__(self) -> None:
        self.steps: list[tuple[Tensor, ...]] = []

    def record(self, state: Tensor, accepted: Tensor, probability: Tensor, energy: Tensor,
               proposal_energy: Tensor, success: Tensor) -> None:
        """Store the state after one transition with its acceptance statistics (all tensors are new)."""
        self.steps.append((state, accepted, probability, energy, proposal_energy, success))

    def result(self) -> ChainResult:
        """The recorded steps stacked along a new leading sample dimension."""
        return ChainResult(*(torch.stack(column) for column in zip(*self.steps)))


class ChainAttack(Attack):
    """An attack that runs one Markov chain per example and returns its last state when called."""

    @abstractmethod
    def chain(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> ChainResult:
        """Run the chain for every example of the batch."""

    def sample(self, x: Tensor, y: Tensor) -> ChainResult:
        """The whole sequence of adversarial examples with its acceptance statistics."""
        result = self.guarded(x, y, self.chain)
        return replace(result, samples=result.samples.to(dtype=x.dtype))

    def perturb(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.chain(ball, y, generator).samples[-1]

    def outcome(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per-example success of a chain state; always False for callable (label-free) losses."""
        if self.labelled:
            return self.succeeded(logits, y)
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
