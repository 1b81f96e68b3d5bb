"""Exact values computed by hand on a linear two-class model, and the chain bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hmcam.attacks import AIFGSM, FGSM, HMCAM, IFGSM, MIFGSM, PGD, metropolis_hastings
from hmcam.attacks.hmc import reflect_into_box


class Linear2(nn.Module):
    """logits = (w . x, 0): for label 0, CE = softplus(-w.x) and dCE/dx = -(1 - sigmoid(w.x)) w."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w
        return torch.stack([score, torch.zeros_like(score)], dim=1)


W = torch.tensor([0.5, -1.0, 2.0, 0.0])
X = torch.tensor([[[[0.5, 0.5, 0.5, 0.5]]]])
Y = torch.tensor([0])


def hand_gradient(x: torch.Tensor) -> torch.Tensor:
    score = (x.flatten() * W).sum()
    return -(1 - torch.sigmoid(score)) * W


def test_fgsm_equals_hand_formula() -> None:
    expected = (X.flatten() + 0.1 * hand_gradient(X).sign()).reshape(X.shape)
    torch.testing.assert_close(FGSM(Linear2(W), 0.1)(X, Y), expected)
    # L2: x + eps * g / ||g||
    g = hand_gradient(X)
    torch.testing.assert_close(
        FGSM(Linear2(W), 0.1, norm="l2")(X, Y), (X.flatten() + 0.1 * g / g.norm()).reshape(X.shape)
    )


def test_one_step_of_each_iterative_attack() -> None:
    step = (X.flatten() + 0.03 * hand_gradient(X).sign()).reshape(X.shape)
    for attack in (IFGSM(Linear2(W), 0.1, alpha=0.03, steps=1), MIFGSM(Linear2(W), 0.1, alpha=0.03, steps=1)):
        torch.testing.assert_close(attack(X, Y), step)
    # PGD without a random start is I-FGSM with Madry's default step 2.5 * eps / steps = 0.25 -> clipped to eps.
    torch.testing.assert_close(
        PGD(Linear2(W), 0.1, steps=1, random_start=False)(X, Y),
        (X.flatten() + 0.1 * hand_gradient(X).sign()).reshape(X.shape),
    )


def test_mifgsm_second_step_uses_l1_normalized_momentum() -> None:
    # With decay 1, momentum after two steps is g1/|g1|_1 + g2/|g2|_1; check the sign of that by hand.
    x1 = X.flatten() + 0.01 * hand_gradient(X).sign()
    g1, g2 = hand_gradient(X), hand_gradient(x1)
    momentum = g1 / g1.abs().sum() + g2 / g2.abs().sum()
    expected = (x1 + 0.01 * momentum.sign()).reshape(X.shape)
    torch.testing.assert_close(MIFGSM(Linear2(W), 0.1, alpha=0.01, steps=2)(X, Y), expected)


def test_one_accumulated_momentum_step_against_the_formula() -> None:
    alpha, eps, beta1, beta2, delta = 0.001, 0.3, 0.95, 0.999, 1e-8
    g = hand_gradient(X)
    v = (1 - beta1) * g
    e = (1 - beta2) * g * g
    step = torch.clamp(alpha / ((1 - beta1) * (torch.sqrt(e / (1 - beta2)) + delta)), max=eps)
    expected = (X.flatten() + step * v.sign()).clamp(0, 1).reshape(X.shape)
    torch.testing.assert_close(AIFGSM(Linear2(W), eps, alpha=alpha, steps=1)(X, Y), expected)
    # The zero-gradient coordinate gets the capped step but has no direction, so it does not move.
    assert step[3] == eps
    assert expected.flatten()[3] == X.flatten()[3]


def test_two_accumulated_momentum_steps_against_the_formula() -> None:
    alpha, eps, beta1, beta2, delta = 0.002, 0.3, 0.95, 0.999, 1e-8
    theta = X.flatten().clone()
    v = torch.zeros(4)
    e = torch.zeros(4)
    e_max = torch.zeros(4)
    for t in (1, 2):
        g = hand_gradient(theta)
        v = beta1 * v + (1 - beta1) * g
        e = beta2 * e + (1 - beta2) * g * g
        e_max = torch.maximum(e_max, e)
        step = torch.clamp(alpha / ((1 - beta1**t) * (torch.sqrt(e_max / (1 - beta2**t)) + delta)), max=eps)
        theta = X.flatten() + (theta + step * v.sign() - X.flatten()).clamp(-eps, eps)
        theta = theta.clamp(0, 1)
    torch.testing.assert_close(AIFGSM(Linear2(W), eps, alpha=alpha, steps=2)(X, Y), theta.reshape(X.shape))


def test_metropolis_hastings_probability_and_draws() -> None:
    log_ratio = torch.tensor([0.0, 1.0, -1.0, math.log(0.25), float("nan")])
    accepted, probability = metropolis_hastings(log_ratio, torch.Generator().manual_seed(7))
    torch.testing.assert_close(probability[:4], torch.tensor([1.0, 1.0, math.exp(-1.0), 0.25]))
    draws = torch.rand(5, generator=torch.Generator().manual_seed(7))
    assert accepted[:4].tolist() == (draws[:4] < probability[:4]).tolist()
    assert not accepted[4], "a NaN energy difference must be rejected"


def test_hmcam_with_one_sample_and_forced_acceptance_equals_aifgsm(digits_correct, digits_model) -> None:
    x, y = digits_correct
    chain = HMCAM(digits_model, 0.1, alpha=0.01, steps=6, samples=1, temperature=math.inf)(x, y)
    torch.testing.assert_close(chain, AIFGSM(digits_model, 0.1, alpha=0.01, steps=6)(x, y))


def test_hmcam_energy_bookkeeping(digits_correct, digits_model) -> None:
    x, y = digits_correct
    x, y = x[:32], y[:32]
    result = HMCAM(digits_model, 0.1, steps=3, samples=4, temperature=0.5, seed=0).sample(x, y)
    with torch.no_grad():
        start_energy = nn.functional.cross_entropy(digits_model(x), y, reduction="none")  # J(x) + |v_0| = J(x)
        sample_loss = nn.functional.cross_entropy(
            digits_model(result.samples.flatten(0, 1)), y.repeat(4), reduction="none"
        ).reshape(4, 32)
    previous = torch.cat([start_energy[None], result.energy[:-1]])
    expected = torch.exp(((result.proposal_energy - previous) / 0.5).clamp(max=0))
    torch.testing.assert_close(result.acceptance_probability, expected, atol=1e-4, rtol=1e-4)
    # The recorded energy of a state is its loss plus the kinetic term, so it is at least the loss.
    assert (result.energy >= sample_loss - 1e-4).all()
    # A rejected transition repeats the previous state exactly.
    padded = torch.cat([x[None], result.samples])
    rejected = ~result.accepted
    assert torch.equal(padded[1:][rejected], padded[:-1][rejected])


def test_reflection_into_a_box_by_hand() -> None:
    lower, upper = torch.zeros(4), torch.ones(4)
    position = torch.tensor([1.25, -0.25, 0.5, 2.5])
    velocity = torch.ones(4)
    folded, flipped = reflect_into_box(position, velocity, lower, upper)
    torch.testing.assert_close(folded, torch.tensor([0.75, 0.25, 0.5, 0.5]))
    torch.testing.assert_close(flipped, torch.tensor([-1.0, -1.0, 1.0, 1.0]))


@pytest.mark.parametrize("alpha", [0.001])
def test_hmc_leapfrog_conserves_energy_for_small_steps(digits_correct, digits_model, alpha) -> None:
    from hmcam.attacks import HMC

    x, y = digits_correct
    result = HMC(digits_model, 0.05, alpha=alpha, steps=5, samples=3, seed=0).sample(x[:64], y[:64])
    # A nearly exact integrator keeps H almost constant, so nearly every proposal is accepted.
    assert result.acceptance_rate > 0.9


def test_daa_interaction_for_two_particles_by_hand() -> None:
    from hmcam.attacks import DAA

    attack = DAA(Linear2(W), 0.1, c=1.1)
    points = torch.tensor([[0.0], [1.0]])
    grads = torch.tensor([[1.0], [-1.0]])
    # Squared distances {0, 1, 1, 0}: median 0.5, h^2 = 0.5 / (2 ln 2), so K_12 = exp(-1 / (2 h^2)) = 0.25.
    h2 = 0.5 / (2 * math.log(2))
    repulsion = 0.25 * 1.0 / h2  # sum_j K_ij (x_i - x_j) / h^2 for particle 2 (particle 1 gets the negative)
    smoothed = 1.0 + 1.1 / 2 * (0.75 + repulsion)  # g + c/B (K g - repulsion), with (K g)_1 = 1 - 0.25
    torch.testing.assert_close(attack.interaction(points, grads), torch.tensor([[smoothed], [-smoothed]]))
    # A lone example has no neighbours: DAA is PGD.
    torch.testing.assert_close(attack.interaction(points[:1], grads[:1]), grads[:1])


def test_daa_handles_batches_beyond_the_quantile_limit() -> None:
    # torch.quantile refuses more than 16M values: a batch over 4096 has B^2 squared distances.
    from hmcam.attacks.daa import blob_interaction, interpolated_median

    values = torch.tensor([4.0, 1.0, 3.0, 2.0])
    assert interpolated_median(values) == 2.5 and interpolated_median(values[:3]) == 3.0
    points = torch.rand(4100, 2, generator=torch.Generator().manual_seed(0))
    phi = blob_interaction(points, torch.ones_like(points), 1.1)
    assert phi.shape == points.shape and torch.isfinite(phi).all()


def test_alpha_scale_batch_reproduces_the_batch_mean_step() -> None:
    # The paper averages the loss over the batch: gradients are 1/B of the per-example ones. With
    # alpha_scale="batch" the per-example attack takes exactly the step of the batch-mean formula.
    x = X.repeat(4, 1, 1, 1)
    y = Y.repeat(4)
    alpha, eps, beta1, beta2, delta = 0.001, 0.3, 0.95, 0.999, 1e-8
    g = hand_gradient(X) / 4  # the batch-mean gradient of one example
    step = torch.clamp(alpha / ((1 - beta1) * (torch.sqrt((1 - beta2) * g * g / (1 - beta2)) + delta)), max=eps)
    expected = (X.flatten() + step * g.sign()).clamp(0, 1).reshape(X.shape).repeat(4, 1, 1, 1)
    paper = AIFGSM(Linear2(W), eps, alpha=alpha, steps=1, alpha_scale="batch")(x, y)
    torch.testing.assert_close(paper, expected)
    # On the per-example scale the same step needs alpha times the batch size.
    torch.testing.assert_close(AIFGSM(Linear2(W), eps, alpha=4 * alpha, steps=1, delta=4 * delta)(x, y), paper)
