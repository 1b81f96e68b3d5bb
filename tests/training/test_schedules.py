"""Learning-rate schedules: exact rates at given progress, computed by hand."""

from __future__ import annotations

import math

import pytest

from hmcam.training.schedules import Schedule, resolve_milestones


def test_multistep_matches_the_papers_free_and_yopo_schedule() -> None:
    # Section 5.1: lr 0.2 for 40 epochs, divided by 10 at epochs 30 and 36.
    schedule = Schedule("multistep", 0.2, 40, resolve_milestones((30, 36), 40), gamma=0.1)
    assert schedule(0.0) == 0.2
    assert schedule(29.999) == 0.2
    assert schedule(30.0) == pytest.approx(0.02, rel=1e-12)
    assert schedule(35.5) == pytest.approx(0.02, rel=1e-12)
    assert schedule(36.0) == pytest.approx(0.002, rel=1e-12)
    assert schedule(40.0) == pytest.approx(0.002, rel=1e-12)


def test_multistep_fractions_are_fractions_of_the_run() -> None:
    assert resolve_milestones((0.5, 0.75), 10) == (5.0, 7.5)
    schedule = Schedule("multistep", 0.1, 10, resolve_milestones((0.5, 0.75), 10), gamma=0.5)
    assert schedule(4.99) == 0.1
    assert schedule(5.0) == 0.05
    assert schedule(7.49) == 0.05
    assert schedule(7.5) == 0.025


def test_cosine_values() -> None:
    schedule = Schedule("cosine", 0.4, 12)
    assert schedule(0.0) == 0.4
    assert schedule(4.0) == pytest.approx(0.4 * 0.75, rel=1e-12)  # cos(pi/3) = 1/2
    assert schedule(6.0) == pytest.approx(0.2, rel=1e-12)
    assert schedule(8.0) == pytest.approx(0.4 * 0.25, rel=1e-12)  # cos(2pi/3) = -1/2
    assert schedule(12.0) == pytest.approx(0.0, abs=1e-15)


def test_cyclic_is_a_triangle_peaking_at_the_given_fraction() -> None:
    schedule = Schedule("cyclic", 0.2, 10, peak=0.4)
    assert schedule(0.0) == 0.0
    assert schedule(2.0) == pytest.approx(0.1, rel=1e-12)
    assert schedule(4.0) == pytest.approx(0.2, rel=1e-12)
    assert schedule(7.0) == pytest.approx(0.1, rel=1e-12)  # 0.2 * (10 - 7) / 6
    assert schedule(10.0) == 0.0


def test_warm_up_rises_linearly_to_any_schedule_and_then_leaves_it_alone() -> None:
    warm = Schedule("multistep", 0.1, 10, (5.0,), warmup=2.0)
    assert warm(0.0) == 0.0
    assert warm(0.5) == pytest.approx(0.025, rel=1e-12)
    assert warm(1.5) == pytest.approx(0.075, rel=1e-12)
    unwarmed = Schedule("multistep", 0.1, 10, (5.0,))
    assert [warm(p) for p in (2.0, 4.9, 5.0, 9.0)] == [unwarmed(p) for p in (2.0, 4.9, 5.0, 9.0)]
    cosine, plain = Schedule("cosine", 0.4, 12, warmup=0.5), Schedule("cosine", 0.4, 12)
    assert cosine(0.25) == pytest.approx(plain(0.25) / 2, rel=1e-12)
    assert cosine(6.0) == plain(6.0)
    with pytest.raises(ValueError, match="warm-up must last between 0 and 10 epochs"):
        Schedule("cosine", 0.1, 10, warmup=11.0)


@pytest.mark.parametrize("milestones", [(0,), (-1,), (1.5,), (3, 2), (True,), (math.nan,), ("3",)])
def test_ambiguous_or_invalid_milestones_raise(milestones: tuple) -> None:
    with pytest.raises(ValueError, match="milestone"):
        resolve_milestones(milestones, 10)


def test_invalid_schedules_raise() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        Schedule("step", 0.1, 10)
    with pytest.raises(ValueError, match="learning rate"):
        Schedule("cosine", 0.0, 10)
    with pytest.raises(ValueError, match="cyclic peak"):
        Schedule("cyclic", 0.1, 10, peak=1.0)
    with pytest.raises(ValueError, match="gamma"):
        Schedule("multistep", 0.1, 10, gamma=1.5)
    with pytest.raises(ValueError, match=r"progress must lie in \[0, 10\]"):
        Schedule("cosine", 0.1, 10)(10.5)
