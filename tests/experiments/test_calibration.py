"""Calibration of the attack experiments' eps: the choice rule, the held-out images, the cache, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hmcam.experiments.calibration import PAPER_PGD_WHITE_BOX, Calibration, calibrate, calibrated, choose_eps
from hmcam.experiments.framework import RunOptions
from hmcam.experiments.setup import ATTACK_SCALES, calibration_text

SMOKE = ATTACK_SCALES["smoke"]


def test_the_eps_closest_to_the_papers_white_box_success_is_chosen() -> None:
    assert choose_eps([0.05, 0.1, 0.2], [60.0, 90.0, 99.0]) == 0.1
    assert choose_eps([0.05, 0.1, 0.2], [10.0, 20.0, 30.0]) == 0.2
    # A tie goes to the smaller eps: the weaker threat model that reaches the regime.
    assert choose_eps([0.1, 0.2], [PAPER_PGD_WHITE_BOX - 1, PAPER_PGD_WHITE_BOX + 1]) == 0.1
    with pytest.raises(ValueError, match="one white-box success per eps"):
        choose_eps([0.1], [])


@pytest.fixture(scope="module")
def calibration(smoke_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Calibration:
    return calibrate(SMOKE, RunOptions(tmp_path_factory.mktemp("calibration"), models_dir=smoke_models, progress=False))


def test_calibration_measures_pgd_on_held_out_images(calibration: Calibration) -> None:
    assert calibration.grid == SMOKE.eps_grid and calibration.budget == SMOKE.budget
    # The held-out images follow the attacked ones: no experiment evaluates them.
    assert calibration.held_out == (SMOKE.images, SMOKE.images + SMOKE.calibration_images)
    assert all(0 <= rate <= 100 for rate in calibration.white_box + calibration.black_box)
    # A larger ball fools at least about as often (one PGD run per eps: allow a few images of noise).
    assert calibration.white_box[-1] >= calibration.white_box[0] - 5
    assert calibration.chosen == choose_eps(calibration.grid, calibration.white_box)
    assert set(calibration.neighbours()) <= set(calibration.grid) - {calibration.chosen}
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration


def test_calibration_is_cached_beside_the_zoo(calibration: Calibration, smoke_models: Path, tmp_path: Path) -> None:
    cache = smoke_models / "calibration-smoke.json"
    written = cache.stat().st_mtime_ns
    again = calibrate(SMOKE, RunOptions(tmp_path, models_dir=smoke_models, progress=False))
    assert again == calibration and cache.stat().st_mtime_ns == written
    scale = calibrated(SMOKE, RunOptions(tmp_path, models_dir=smoke_models, progress=False))
    assert scale.eps == calibration.chosen and scale.calibration == calibration.to_dict()
    text = calibration_text(scale)
    assert "### Calibration of eps" in text and f"{calibration.chosen:.4g}" in text and "92.7%" in text


def test_a_scale_without_a_grid_keeps_its_eps(tmp_path: Path) -> None:
    fixed = dataclasses.replace(SMOKE, eps_grid=(), calibration_images=0)
    assert calibrated(fixed, RunOptions(tmp_path)) is fixed
    assert "fixed by the scale" in calibration_text(fixed)
    with pytest.raises(ValueError, match="no eps grid"):
        calibrate(fixed, RunOptions(tmp_path))
    with pytest.raises(ValueError, match="calibration_images"):
        dataclasses.replace(SMOKE, calibration_images=0)
