"""Vanilla HMC (Algorithm 1): Gaussian momentum, leapfrog integration and Metropolis-Hastings."""

from __future__ import annotations

import torch
from torch import Tensor
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.chain import ChainAttack, Recorder, Transition, metropolis_hastings
from hmcam.attacks.norms import LinfNorm, per_example


def reflect_into_box(position: Tensor, velocity: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Fold ``position`` back into [lower, upper] by mirror reflections, flipping ``velocity`` on odd folds.

    Reflection keeps leapfrog volume-preserving and reversible inside a box, so the MH correction
    stays exact (Neal 2011, section 5.1); a projection would not.
    """
    width = (upper - lower).clamp_min(1e-12)
    scaled = (position - lower) / width
    folds = torch.floor(scaled)
    fraction = scaled - folds
    odd = torch.remainder(folds, 2) == 1
    folded = lower + width * torch.where(odd, 1 - fraction, fraction)
    return torch.minimum(torch.maximum(folded, lower), upper), torch.where(odd, -velocity, velocity)


def kinetic_energy(velocity: Tensor) -> Tensor:
    """K(v) = |v|^2 / 2 of a Gaussian momentum, per example."""
    return 0.5 * velocity.pow(2).flatten(1).sum(dim=1)


class HMC(ChainAttack):
    """Standard HMC (Algorithm 1) targeting p(theta) ∝ exp(J(theta) / temperature) on the feasible set.

    Potential ``U = -J / temperature``, kinetic ``K = |v|^2 / 2`` with ``v ~ N(0, I)`` drawn afresh at
    each of the ``samples`` transitions; ``steps`` leapfrog steps of size ``alpha`` (``alpha``
    defaults to ``eps / steps``). Deviations from Algorithm 1 as printed, and why:
    - Acceptance is ``min(1, exp(H_old - H_new))``. Algorithm 1 prints ``exp(H_new - H_old)``, which
      favours energy *gains* and breaks detailed balance.
    - The target density is ``exp(+J / temperature)``: Eq. 7 writes ``U = J``, which with
      ``p ∝ exp(-U)`` would sample *low*-loss points; an attack wants high loss.
    - The leapfrog is the standard one: a half momentum step, T position steps each followed by a
      full momentum step except the last, which is a half step. Algorithm 1 prints a full momentum
      step at t = T followed by another half step, which is not time-reversible.
    - In the L-inf ball (a box once intersected with the bounds) the trajectory reflects off the
      walls, which keeps the chain exact; for L2 and L1 it is projected, an approximation near the
      boundary.
    Cost: S * T + 1 gradient evaluations (the gradient at an accepted end point is reused as the
    next transition's first half step).
    """

    def move(self, ball: Ball, position: Tensor, velocity: Tensor, alpha: Tensor | float) -> tuple[Tensor, Tensor]:
        """One position update of the leapfrog, kept inside the feasible set."""
        moved = position + alpha * velocity
        if isinstance(ball.norm, LinfNorm):
            lower = (ball.center - ball.eps).clamp_min(ball.bounds[0])
            upper = (ball.center + ball.eps).clamp_max(ball.bounds[1])
            return reflect_into_box(moved, velocity, lower, upper)
        return ball.project(moved), velocity

    @override
    def chain(self, ball: Ball, y: Tensor, generator: torch.Generator | None, recorder: Recorder) -> None:
        alpha = self.step_size(ball)
        state = self.start(ball, generator)
        state_objective, state_logits, state_grad = self.gradient(state, y)
        for _ in range(self.samples):
            velocity = torch.randn(state.shape, generator=generator, device=state.device, dtype=state.dtype)
            old_energy = -state_objective / self.temperature + kinetic_energy(velocity)
            velocity = velocity + 0.5 * alpha * state_grad / self.temperature
            position = state
            for step in range(1, self.steps + 1):
                position, velocity = self.move(ball, position, velocity, alpha)
                objective, logits, grad = self.gradient(position, y)
                velocity = velocity + (0.5 if step == self.steps else 1.0) * alpha * grad / self.temperature
            new_energy = -objective / self.temperature + kinetic_energy(velocity)
            accepted, probability = metropolis_hastings(old_energy - new_energy, generator)
            state = torch.where(per_example(accepted, state), position, state)
            state_grad = torch.where(per_example(accepted, grad), grad, state_grad)
            state_objective = torch.where(accepted, objective, state_objective)
            state_logits = torch.where(per_example(accepted, logits), logits, state_logits)
            energy = torch.where(accepted, new_energy, old_energy)
            recorder.record(
                Transition(
                    state,
                    accepted,
                    probability,
                    energy,
                    new_energy,
                    state_objective,
                    state_logits.argmax(dim=1),
                    self.outcome(state_logits, y),
                )
            )
