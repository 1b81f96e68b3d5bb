"""The feasible set: bound-aware steps (L1 and L2 at the pixel bounds) and low-precision outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmcam.attacks import AIFGSM, FGSM, HMCAM, IFGSM, MPGD, PGD, get_norm
from hmcam.attacks.ball import Ball


def corner_model() -> nn.Module:
    """The issue's reproduction: class 0 while 10 x0 + x1 + x2 + x3 > 1, so [0, 0, 0, 0] is class 1."""
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[10.0, 1, 1, 1], [0, 0, 0, 0]]))
        model.bias.copy_(torch.tensor([0.0, 1]))
    return model


X = torch.tensor([[0.0, 0.5, 0.5, 0.5]])
Y = torch.tensor([0])


@pytest.mark.parametrize(
    "attack",
    [
        lambda m: IFGSM(m, eps=1.5, alpha=0.1, steps=50, norm="l1"),
        lambda m: FGSM(m, eps=1.5, norm="l1"),
        # Under L2 the bound-aware step is an option: the reference PGD-L2 step keeps blocked pixels.
        lambda m: IFGSM(m, eps=1.0, alpha=0.1, steps=20, norm="l2", bound_aware_step=True),
    ],
)
def test_a_pixel_at_its_bound_does_not_absorb_the_step(attack) -> None:
    # The largest gradient sits on x0, already at 0 and pushed further down: the step must go elsewhere.
    model = corner_model()
    adversarial = attack(model)(X, Y)
    torch.testing.assert_close(adversarial, torch.zeros(1, 4))
    assert model(adversarial).argmax(1).item() == 1


def test_direction_skips_blocked_coordinates_by_hand() -> None:
    center = torch.tensor([[0.0, 1.0, 0.5, 0.5]])
    ascent = torch.tensor([[-4.0, 3.0, 2.0, -1.0]])  # x0 pushed below 0 and x1 above 1: both blocked
    for name, expected in (
        ("linf", [0.0, 0.0, 1.0, -1.0]),
        ("l2", [0.0, 0.0, 2 / 5**0.5, -1 / 5**0.5]),
        ("l1", [0.0, 0.0, 1.0, 0.0]),
    ):
        ball = Ball(center, torch.ones(1, 1), get_norm(name), (0.0, 1.0), torch.float32, bound_aware_step=True)
        torch.testing.assert_close(ball.direction(center, ascent), torch.tensor([expected]))
    # By default only L1 masks (Foolbox's sparse L1 descent); L-inf and L2 take the reference step.
    for name in ("linf", "l2"):
        ball = Ball(center, torch.ones(1, 1), get_norm(name), (0.0, 1.0), torch.float32)
        torch.testing.assert_close(ball.direction(center, ascent), get_norm(name).direction(ascent))
    ball = Ball(center, torch.ones(1, 1), get_norm("l1"), (0.0, 1.0), torch.float32)
    torch.testing.assert_close(ball.direction(center, ascent), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


def test_l1_step_direction_is_a_sparse_unit_top_k() -> None:
    grad = torch.tensor([[0.1, -5.0, 3.0, 0.0] + [0.01] * 196])  # 200 coordinates: the top 1% is 2
    direction = get_norm("l1").step_direction(grad)
    torch.testing.assert_close(direction[0, :4], torch.tensor([0.0, -0.5, 0.5, 0.0]))
    assert direction[0, 4:].abs().sum() == 0
    # Ties at the threshold share the unit budget; a zero gradient gives no direction.
    torch.testing.assert_close(
        get_norm("l1").step_direction(torch.tensor([[1.0, -1.0, 1.0]])), torch.tensor([[1 / 3, -1 / 3, 1 / 3]])
    )
    assert get_norm("l1").step_direction(torch.zeros(1, 3)).abs().sum() == 0


def test_l1_attack_changes_many_pixels_and_fools_the_digits_model(digits_correct, digits_model) -> None:
    # Before the fix, BIM-L1 moved one saturated pixel per image and fooled nothing.
    x, y = digits_correct
    adversarial = IFGSM(digits_model, eps=8.0, steps=20, norm="l1")(x, y)
    changed = ((adversarial - x).abs().flatten(1) > 1e-6).sum(1).float()
    # Measured over 10 trainings: median 10 pixels changed, every image fooled; before the fix, 1 and 0.
    assert changed.median() >= 5
    fooled = (digits_model(adversarial).argmax(1) != y).float().mean()
    assert fooled > 0.5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 8 / 255), ("l2", 0.5), ("l1", 2.0)])
def test_low_precision_outputs_stay_in_the_ball(dtype, norm, eps) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3)).to(dtype)
    x = torch.rand(64, 3, 4, 4).to(dtype)
    y = torch.randint(0, 3, (64,))
    for attack in (
        FGSM(model, eps, norm=norm),
        PGD(model, eps, steps=5, norm=norm, seed=0),
        MPGD(model, eps, steps=5, norm=norm, seed=0),
        AIFGSM(model, eps, steps=5, norm=norm),
        HMCAM(model, eps, steps=2, samples=2, norm=norm, seed=0),
    ):
        adversarial = attack(x, y)
        assert adversarial.dtype == dtype
        assert (get_norm(norm).measure(adversarial.double() - x.double()) <= eps).all(), type(attack).__name__
        assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_finish_rounds_toward_the_center() -> None:
    center = torch.tensor([[0.5, 0.25]])
    ball = Ball(center, torch.full((1, 1), 0.034), get_norm("linf"), (0.0, 1.0), torch.bfloat16)
    point = torch.tensor([[0.534, 0.2505]])  # bf16 has steps of 2^-8 above 0.5: 0.534 rounds to 0.53515625
    assert (point.bfloat16().float() - center).abs()[0, 0] > 0.034
    finished = ball.finish(point)
    assert finished.dtype == torch.bfloat16
    assert ((finished.float() - center).abs() <= 0.034).all()
    # The neighbour toward the center, not the center itself; coordinates already inside keep the nearest value.
    torch.testing.assert_close(finished.float(), torch.tensor([[0.53125, 0.25]]))
