"""Markov chains of adversarial examples: the Metropolis-Hastings test, the recorders and the chain base.

A chain attack runs ``chains`` chains of ``samples`` transitions per example, all chains of all
examples as one batch; a recorder decides what is kept: :class:`SequenceRecorder` every state
(``sample()`` returns the sequence [S, B, ...], or [S, C, B, ...] with C > 1 chains),
:class:`LastStateRecorder` only the current one (``attack(x, y)``, memory flat in S).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks.arviz_export import to_inference_data
from hmcam.attacks.ball import Ball
from hmcam.attacks.loop import IterativeAttack
from hmcam.core.validate import check_positive_int


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
    ``energy`` (H of the state), ``proposal_energy`` (H of the candidate), ``objective`` (J of the
    state, the loss trace), ``prediction`` (the state's predicted class) and ``success`` are [S, B].
    With C > 1 chains per example every field has a chain dimension after S: [S, C, B, ...].
    """

    samples: Tensor
    accepted: Tensor
    acceptance_probability: Tensor
    energy: Tensor
    proposal_energy: Tensor
    objective: Tensor
    prediction: Tensor
    success: Tensor

    @property
    def chains(self) -> int:
        """C, the number of chains per example (1 when the fields have no chain dimension)."""
        return self.samples.shape[1] if self.accepted.dim() == 3 else 1

    @property
    def acceptance_rate(self) -> float:
        """Fraction of accepted transitions over all chains and steps."""
        return float(self.accepted.float().mean())

    def to_inference_data(
        self, *, examples: Sequence[int] | None = None, attrs: Mapping[str, Any] | None = None
    ) -> Any:
        """The traces as an ArviZ ``InferenceData``, dims (chain, draw, example); needs the extra ``arviz``.

        ``posterior`` holds ``loss``, ``success`` and ``prediction``, ``sample_stats`` ``energy``,
        ``acceptance_rate`` and ``accepted``; see :mod:`hmcam.attacks.arviz_export`.
        """
        return to_inference_data(self, examples=examples, attrs=attrs)

    @staticmethod
    def concatenate(parts: Sequence[ChainResult]) -> ChainResult:
        """The results of several batches as one over all their examples, in order (same chains and draws)."""
        if not parts:
            raise ValueError("nothing to concatenate: no chain results")
        shapes = {(part.chains, part.accepted.shape[0]) for part in parts}
        if len(shapes) != 1:
            raise ValueError(f"chain results differ in (chains, draws): {sorted(shapes)}")
        axis = 1 if parts[0].chains == 1 else 2
        joined = (torch.cat([getattr(part, f.name) for part in parts], dim=axis) for f in fields(ChainResult))
        return ChainResult(*joined)


@dataclass(frozen=True)
class Transition:
    """One transition of every chain of the batch: the new state and its acceptance statistics ([B])."""

    state: Tensor
    accepted: Tensor
    acceptance_probability: Tensor
    energy: Tensor
    proposal_energy: Tensor
    objective: Tensor
    prediction: Tensor
    success: Tensor


class Recorder(ABC):
    """Receives the transitions of a chain as they happen."""

    @abstractmethod
    def record(self, transition: Transition) -> None:
        """Keep what this recorder keeps of one transition."""


class SequenceRecorder(Recorder):
    """Keeps every transition and stacks them into a :class:`ChainResult`.

    With ``sink``, each state is handed to ``sink(transition_index, state)`` as it is recorded and
    only an empty stand-in is kept, so that memory does not grow with S (the states go to disk).
    """

    def __init__(self, sink: Callable[[int, Tensor], None] | None = None) -> None:
        self.transitions: list[Transition] = []
        self.sink = sink

    @override
    def record(self, transition: Transition) -> None:
        if self.sink is not None:
            self.sink(len(self.transitions), transition.state)
            transition = replace(transition, state=transition.state.new_empty(transition.state.shape[0], 0))
        self.transitions.append(transition)

    def result(self) -> ChainResult:
        """The recorded transitions stacked along a new leading sample dimension."""
        # Transition and ChainResult list the same fields in the same order.
        return ChainResult(*(torch.stack([getattr(t, f.name) for t in self.transitions]) for f in fields(Transition)))


class LastStateRecorder(Recorder):
    """Keeps only the current state, so a chain's memory does not grow with S."""

    def __init__(self) -> None:
        self.state: Tensor | None = None

    @override
    def record(self, transition: Transition) -> None:
        self.state = transition.state


class ChainAttack(IterativeAttack):
    """An attack that runs ``chains`` Markov chains per example for ``samples`` transitions each.

    ``sample(x, y)`` returns the whole sequence with its acceptance statistics; ``attack(x, y)``
    returns a last state (the best over the chains and ``restarts`` rounds: the first successful
    one, else the highest objective), holding one state per chain at a time. The C chains of the B
    examples run as one batch of C * B, so they cost one chain's sequential steps; they differ only
    through a random element (``random_start``, HMCAM's ``momentum_refresh``, HMC's Gaussian
    momentum) and the acceptance draws. ``temperature`` scales the energy difference of the
    acceptance test (tau of Eq. 3).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor,
        alpha: float | None = None,
        steps: int = 10,
        samples: int = 5,
        temperature: float = 1.0,
        *,
        chains: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps, alpha, steps, **kwargs)
        self.samples = check_positive_int("samples", samples)
        self.chains = check_positive_int("chains", chains)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be > 0 (math.inf accepts every proposal), got {temperature!r}")
        self.temperature = float(temperature)

    @abstractmethod
    def chain(self, ball: Ball, y: Tensor, generator: torch.Generator | None, recorder: Recorder) -> None:
        """Run the chain of every example of the batch, passing each transition to ``recorder``."""

    def log_acceptance(self, energy_change: Tensor) -> Tensor:
        """``energy_change / temperature``, the log acceptance ratio; zero (accept) at infinite temperature."""
        if math.isfinite(self.temperature):
            return energy_change / self.temperature
        return torch.zeros_like(energy_change)

    def sample(self, x: Tensor, y: Tensor, sink: Callable[[int, Tensor], None] | None = None) -> ChainResult:
        """The whole sequence of adversarial examples with its statistics: [S, B, ...], or [S, C, B, ...].

        With ``sink``, every sample is passed to ``sink(s, sample)`` as soon as transition s is made
        (``sample`` is [B, ...] or [C, B, ...], in the caller's dtype) and not kept: the result's
        ``samples`` are then empty ([S, B, 0] or [S, C, B, 0]) and memory stays flat in S.
        """

        def body(ball: Ball, labels: Tensor, generator: torch.Generator | None) -> ChainResult:
            tiled = ball.tile(self.chains)
            batch = ball.center.shape[0]

            def split(values: Tensor) -> Tensor:
                return values if self.chains == 1 else values.reshape(self.chains, batch, *values.shape[1:])

            streamed = None if sink is None else lambda index, state: sink(index, split(tiled.finish(state)))
            recorder = SequenceRecorder(streamed)
            self.chain(tiled, _tile(labels, self.chains), generator, recorder)
            result = recorder.result()
            if sink is None:
                result = replace(result, samples=torch.stack([tiled.finish(state) for state in result.samples]))
            if self.chains == 1:
                return result
            return ChainResult(*(torch.stack([split(v) for v in getattr(result, f.name)]) for f in fields(ChainResult)))

        return self.guarded(x, y, body)

    @override
    def run(self, ball: Ball, y: Tensor, generator: torch.Generator | None) -> Tensor:
        recorder = LastStateRecorder()
        self.chain(ball.tile(self.chains), _tile(y, self.chains), generator, recorder)
        assert recorder.state is not None  # samples >= 1
        if self.chains == 1:
            return recorder.state
        # The best chain of each example: its first successful one, else the one with the highest objective.
        batch = ball.center.shape[0]
        objective, success = self.score(recorder.state, _tile(y, self.chains))
        rank = objective.reshape(self.chains, batch).clone()
        rank[success.reshape(self.chains, batch)] = math.inf
        best = rank.argmax(dim=0) * batch + torch.arange(batch, device=rank.device)
        return recorder.state[best]


def _tile(labels: Tensor, count: int) -> Tensor:
    """``count`` copies of the batch's labels (or loss arguments), copy-major like :meth:`Ball.tile`."""
    return labels.repeat(count, *([1] * (labels.dim() - 1)))
