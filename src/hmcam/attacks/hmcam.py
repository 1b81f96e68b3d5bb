"""HMCAM: Hamiltonian Monte Carlo with accumulated momentum (Algorithm 2), a chain of adversarial examples."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from hmcam.attacks.aifgsm import Moments
from hmcam.attacks.ball import Ball
from hmcam.attacks.chain import ChainAttack, Recorder, Transition, metropolis_hastings
from hmcam.attacks.norms import per_example
from hmcam.core.validate import check_non_negative_float


def kinetic_energy(velocity: Tensor) -> Tensor:
    """K(v) = |v| of Algorithm 2, line 2, summed over each example's coordinates."""
    return velocity.abs().flatten(1).sum(dim=1)


@dataclass(frozen=True)
class Proposal:
    """A proposed chain state and what the acceptance test needs: J and logits at both of its ends.

    ``point`` is theta_T, ``kinetic`` K(v_T); ``start_objective``, ``start_logits`` and
    ``start_kinetic`` (K(v_0): zero unless the momentum is refreshed) belong to the chain state the
    trajectory started from.
    """

    point: Tensor
    logits: Tensor
    objective: Tensor
    kinetic: Tensor
    start_objective: Tensor
    start_logits: Tensor
    start_kinetic: Tensor


class HMCAM(ChainAttack):
    """Algorithm 2: S transitions of T accumulated-momentum steps, each followed by Metropolis-Hastings.

    ``samples`` = S, ``steps`` = T, so N = S * T gradient evaluations plus S forward passes for the
    acceptance test. The chain starts at theta = x (or a uniform point of the ball with
    ``random_start=True``). Each transition runs the loop with a fresh
    :class:`~hmcam.attacks.aifgsm.AccumulatedMomentum` rule from the chain state, proposing theta_T
    with momentum v_T, and accepts the whole example with probability
    ``min(1, exp((H_new - H_old) / temperature))``, where ``H = J(theta) + sum |v|`` and J is the
    per-example objective (the targeted objective in targeted mode). On rejection the chain keeps
    its state.

    Choices where the paper is ambiguous, and why:
    - Acceptance uses ``exp(+(H_new - H_old))`` as Algorithm 2 prints it: the attack's target density
      favours high loss, so the "energy" here is a score to climb, not a potential to descend.
    - H_old pairs the chain state with the momentum that reached it (zero for the start, whose
      trajectory is empty); J(state) comes from the first gradient evaluation of each transition.
    - ``temperature`` divides the energy difference (tau of Eq. 3); ``math.inf`` accepts every proposal,
      which makes ``samples=1`` equal to :class:`~hmcam.attacks.AIFGSM`.
    - The trajectory from a state is deterministic (the moments restart at zero), so after a
      rejection the next transition would propose exactly the same point: the proposal is reused
      (no gradient evaluations for that example) and only a new uniform draw is made. The flip side
      is that a rejected chain can only stay or take that one proposal; without a random element
      (a random start, momentum refresh) chains from one input cannot differ.
    - ``momentum_refresh`` (beyond the paper; 0, off, by default, which keeps the paper's chain): each
      transition starts its momentum at a random Laplace draw of that scale relative to the
      gradient (see :class:`~hmcam.attacks.aifgsm.AccumulatedMomentum`), as standard HMC draws a
      fresh momentum, and H_old uses that draw's K(v_0). A rejected chain then proposes a new point
      at the next transition, and chains from one input differ.
    - ``alpha`` defaults to ``eps / steps``, as for AI-FGSM (see its ``alpha_scale`` for the paper's
      batch-mean scale). The step ``alpha / (b1 sqrt(e_hat / b2))`` grows as the gradient shrinks;
      when it is capped at eps nearly everywhere, successive L-inf transitions can land on the same
      vertex of the ball. A smaller alpha (e.g. ``0.1 * eps / steps``) keeps successive samples
      distinct, at some cost in targeted success.
    The authors' public code differs (per-pixel acceptance, a kinetic term that cancels, rejected
    proposals kept as the next start, and a returned sequence aliasing one buffer); this follows
    the paper.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float | Tensor,
        alpha: float | None = None,
        steps: int = 10,
        samples: int = 5,
        beta1: float = 0.95,
        beta2: float = 0.999,
        delta: float = 1e-8,
        temperature: float = 1.0,
        *,
        alpha_scale: str = "example",
        momentum_refresh: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, eps, alpha, steps, samples, temperature, **kwargs)
        self.moments = Moments(beta1, beta2, delta, alpha_scale)
        self.momentum_refresh = check_non_negative_float("momentum_refresh", momentum_refresh)

    def propose(self, ball: Ball, state: Tensor, y: Tensor, batch: int, generator: torch.Generator | None) -> Proposal:
        """One trajectory of T accumulated-momentum steps from ``state`` and one forward pass at its end.

        ``batch`` is the size of the attacked batch, which sets alpha on the paper's batch-mean scale
        even when only some of its chains are renewed; ``generator`` draws a refreshed momentum.
        """
        rule = self.moments.rule(self.step_size(ball), ball.eps, batch, self.momentum_refresh, generator)
        trajectory = self.descend(ball, y, state, rule)
        logits, objective = self.evaluate(trajectory.end, y)
        return Proposal(
            trajectory.end,
            logits,
            objective,
            kinetic_energy(rule.velocity),
            trajectory.start_objective,
            trajectory.start_logits,
            rule.initial_kinetic,
        )

    def renew(
        self,
        ball: Ball,
        state: Tensor,
        y: Tensor,
        proposal: Proposal | None,
        stale: Tensor,
        generator: torch.Generator | None,
    ) -> Proposal:
        """Proposals for the chains whose state changed; the others keep theirs (it would be the same)."""
        batch = state.shape[0]
        if proposal is None or bool(stale.all()):
            return self.propose(ball, state, y, batch, generator)
        if not bool(stale.any()):
            return proposal
        index = stale.nonzero().squeeze(1)
        fresh = self.propose(ball.subset(index), state[index], y[index], batch, generator)
        return Proposal(
            *(
                getattr(proposal, field.name).index_copy(0, index, getattr(fresh, field.name))
                for field in fields(Proposal)
            )
        )

    @override
    def chain(self, ball: Ball, y: Tensor, generator: torch.Generator | None, recorder: Recorder) -> None:
        state = self.start(ball, generator)
        state_kinetic = torch.zeros(state.shape[0], device=state.device, dtype=state.dtype)
        proposal: Proposal | None = None
        stale = torch.ones(state.shape[0], dtype=torch.bool, device=state.device)
        refresh = self.momentum_refresh > 0
        for _ in range(self.samples):
            proposal = self.renew(ball, state, y, proposal, stale, generator)
            old_energy = proposal.start_objective + (proposal.start_kinetic if refresh else state_kinetic)
            new_energy = proposal.objective + proposal.kinetic
            accepted, probability = metropolis_hastings(self.log_acceptance(new_energy - old_energy), generator)
            state = torch.where(per_example(accepted, state), proposal.point, state)
            state_kinetic = torch.where(accepted, proposal.kinetic, state_kinetic)
            logits = torch.where(per_example(accepted, proposal.logits), proposal.logits, proposal.start_logits)
            objective = torch.where(accepted, proposal.objective, proposal.start_objective)
            energy = torch.where(accepted, new_energy, old_energy)
            recorder.record(
                Transition(
                    state,
                    accepted,
                    probability,
                    energy,
                    new_energy,
                    objective,
                    logits.argmax(dim=1),
                    self.outcome(logits, y),
                )
            )
            # A refreshed momentum makes every transition a new trajectory, rejected chains included.
            stale = torch.ones_like(accepted) if refresh else accepted
