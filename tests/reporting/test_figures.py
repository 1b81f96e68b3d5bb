"""Figures are real PNG files, written atomically, showing what they claim."""

from __future__ import annotations

import torch
from PIL import Image

from hmcam.reporting.figures import first_changed, save_adversarial_grid, save_bar_chart, save_chain_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_grids_and_chart_are_pngs(tmp_path) -> None:
    clean = torch.rand(3, 1, 8, 8)
    adversarial = (clean + 0.1).clamp(0, 1)
    names = [str(i) for i in range(10)]
    save_adversarial_grid(
        tmp_path / "grid.png", clean, adversarial, torch.tensor([1, 2, 3]), torch.tensor([1, 5, 6]), names, "t"
    )
    save_chain_grid(
        tmp_path / "chain.png",
        clean[:2],
        torch.stack([adversarial[:2]] * 3),
        torch.zeros(3, 2, dtype=torch.long),
        names,
    )
    save_bar_chart(tmp_path / "bars.png", ["a", "b"], [0.5, 0.75], "success rate")
    for name in ("grid.png", "chain.png", "bars.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        width, height = Image.open(tmp_path / name).size
        assert width > 100 and height > 100
    # More examples make a wider grid: one column per example.
    save_adversarial_grid(
        tmp_path / "wide.png",
        clean.repeat(3, 1, 1, 1),
        adversarial.repeat(3, 1, 1, 1),
        torch.arange(9),
        torch.arange(9),
        names,
    )
    assert Image.open(tmp_path / "wide.png").size[0] > 2 * Image.open(tmp_path / "grid.png").size[0]
    (tmp_path / "wide.png").unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bars.png",
        "chain.png",
        "grid.png",
    ]  # no temporary files left


def test_first_changed_puts_flipped_examples_first() -> None:
    order = first_changed(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 9, 2, 9]), 3)
    assert order.tolist() == [1, 3, 0]
