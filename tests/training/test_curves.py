"""The curves PNG."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from hmcam.training.curves import render_curves, save_curves

HISTORY = [
    {"epoch": 1, "train_loss": 1.2, "train_accuracy": 0.5, "clean_accuracy": 0.6, "robust_accuracy": None},
    {"epoch": 2, "train_loss": 0.8, "train_accuracy": 0.7, "clean_accuracy": 0.75, "robust_accuracy": None},
]


def test_render_gives_a_png_with_two_panels(tmp_path: Path) -> None:
    image = Image.open(io.BytesIO(render_curves(HISTORY, "mlp")))
    assert image.format == "PNG"
    assert image.size == (900, 360)
    save_curves(tmp_path / "curves.png", HISTORY, "mlp")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_series_are_skipped_and_no_history_raises() -> None:
    with_robust = [dict(record, robust_accuracy=0.1 * record["epoch"]) for record in HISTORY]
    assert render_curves(with_robust, "x") != render_curves(HISTORY, "x")
    with pytest.raises(ValueError, match="no epochs to plot"):
        render_curves([], "x")
