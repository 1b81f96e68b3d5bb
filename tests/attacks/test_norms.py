"""The threat model's projections, random starts and steepest-ascent directions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hmcam.attacks.norms import NORMS, get_norm, per_example


def test_l1_projection_matches_hand_computed_values() -> None:
    norm = get_norm("l1")
    # |(3, 1, 0)|_1 = 4 > 2: threshold tau = 1 gives (2, 0, 0); signs are kept.
    delta = torch.tensor([[3.0, -1.0, 0.0], [1.0, 1.0, 0.0], [0.2, -0.3, 0.1]])
    eps = torch.tensor([2.0, 1.0, 1.0]).reshape(-1, 1)
    expected = torch.tensor([[2.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, -0.3, 0.1]])
    torch.testing.assert_close(norm.project(delta, eps), expected)


def test_l2_and_linf_projection_hand_values() -> None:
    delta = torch.tensor([[3.0, 4.0], [0.3, -0.4]])
    eps = torch.tensor([1.0, 1.0]).reshape(-1, 1)
    torch.testing.assert_close(get_norm("l2").project(delta, eps), torch.tensor([[0.6, 0.8], [0.3, -0.4]]))
    torch.testing.assert_close(get_norm("linf").project(delta, eps * 0.5), torch.tensor([[0.5, 0.5], [0.3, -0.4]]))


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(NORMS)), seed=st.integers(0, 10_000), eps=st.floats(0.05, 3.0), dims=st.integers(1, 20)
)
def test_projection_is_the_closest_point_of_the_ball(name: str, seed: int, eps: float, dims: int) -> None:
    norm = get_norm(name)
    generator = torch.Generator().manual_seed(seed)
    delta = torch.randn(6, dims, generator=generator, dtype=torch.float64) * 2
    radius = torch.full((6, 1), eps, dtype=torch.float64)
    projected = norm.project(delta, radius)
    assert (norm.measure(projected) <= eps * (1 + 1e-9)).all()
    torch.testing.assert_close(norm.project(projected, radius), projected)  # idempotent
    # No point of the ball (sampled) is closer to delta than the projection.
    candidates = torch.stack([norm.random_start(delta, radius, generator) for _ in range(200)])
    best = (projected - delta).norm(dim=1)
    assert ((candidates - delta).norm(dim=2) >= best - 1e-9).all()


@pytest.mark.parametrize("name", sorted(NORMS))
def test_random_start_is_inside_and_fills_the_ball(name: str) -> None:
    norm = get_norm(name)
    generator = torch.Generator().manual_seed(0)
    like = torch.zeros(4000, 3, dtype=torch.float64)
    eps = torch.full((4000, 1), 0.5, dtype=torch.float64)
    start = norm.random_start(like, eps, generator)
    radii = norm.measure(start) / 0.5
    assert (radii <= 1 + 1e-9).all()
    # Uniform in a 3-dimensional ball of any norm: P(radius <= r) = r^3, so the median radius is 0.5^(1/3).
    assert abs(radii.median().item() - 0.5 ** (1 / 3)) < 0.03


@pytest.mark.parametrize("name", sorted(NORMS))
def test_direction_is_unit_and_steepest(name: str) -> None:
    norm = get_norm(name)
    generator = torch.Generator().manual_seed(1)
    grad = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    direction = norm.direction(grad)
    torch.testing.assert_close(norm.measure(direction), torch.ones(5, dtype=torch.float64))
    # Any point of the unit ball gains at most as much as the steepest direction.
    others = norm.project(
        torch.randn(2500, 8, generator=generator, dtype=torch.float64) * 5, torch.ones(2500, 1, dtype=torch.float64)
    )
    gain = (direction * grad).sum(-1)
    assert ((others.reshape(500, 5, 8) * grad).sum(-1) <= gain + 1e-9).all()


def test_zero_gradient_gives_zero_direction() -> None:
    for norm in NORMS.values():
        assert norm.direction(torch.zeros(2, 3)).abs().sum() == 0


def test_unknown_norm_is_named() -> None:
    with pytest.raises(ValueError, match="unknown norm 'l3'"):
        get_norm("l3")


def test_per_example_reshapes_for_broadcasting() -> None:
    assert per_example(torch.ones(3), torch.zeros(3, 1, 4, 4)).shape == (3, 1, 1, 1)
