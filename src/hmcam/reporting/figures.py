"""Figures people look at: adversarial-example grids and bar charts of attack results."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from hmcam.storage import atomic_write  # noqa: E402


def _save(figure, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write(path, buffer.getvalue())


def _show(axis, image: Tensor, title: str, color: str = "black") -> None:
    picture = image.detach().cpu().permute(1, 2, 0).numpy()
    if picture.shape[2] == 1:
        axis.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1)
    else:
        axis.imshow(picture.clip(0, 1))
    axis.set_title(title, fontsize=7, color=color)
    axis.axis("off")


def save_adversarial_grid(path: str | os.PathLike, clean: Tensor, adversarial: Tensor, clean_labels: Tensor,
                          adversarial_labels: Tensor, class_names: Sequence[str], title: str = "") -> None:
    """Three rows per column: the original, the perturbation (rescaled to [0, 1]) and the adversarial
    example, each titled with the model's prediction (red when the attack changed it)."""
    count = len(clean)
    figure, axes = plt.subplots(3, count, figsize=(1.3 * count, 4.3), squeeze=False)
    delta = adversarial - clean
    scale = delta.abs().amax().clamp_min(1e-12)
    for column in range(count):
        original = class_names[int(clean_labels[column])]
        attacked = class_names[int(adversarial_labels[column])]
        changed = int(clean_labels[column]) != int(adversarial_labels[column])
        _show(axes[0, column], clean[column], original)
        _show(axes[1, column], delta[column] / (2 * scale) + 0.5, f"|d|inf={delta[column].abs().max():.3f}")
        _show(axes[2, column], adversarial[column], attacked, "red" if changed else "black")
    for row, label in enumerate(("original", "perturbation", "adversarial")):
        axes[row, 0].text(-0.15, 0.5, label, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    _save(figure, path)


def save_chain_grid(path: str | os.PathLike, clean: Tensor, samples: Tensor, predictions: Tensor,
                    class_names: Sequence[str], title: str = "") -> None:
    """One row per example: the original, then each sample of its chain titled with the prediction."""
    steps, count = samples.shape[0], samples.shape[1]
    figure, axes = plt.subplots(count, steps + 1, figsize=(1.3 * (steps + 1), 1.4 * count), squeeze=False)
    for row in range(count):
        _show(axes[row, 0], clean[row], "original")
        for step in range(steps):
            _show(axes[row, step + 1], samples[step, row], f"s={step + 1}: {class_names[int(predictions[step, row])]}")
    if title:
        figure.suptitle(title, fontsize=9)
    _save(figure, path)


def save_bar_chart(path: str | os.PathLike, names: Sequence[str], values: Sequence[float], ylabel: str, title: str = "") -> None:
    """A labelled bar chart, e.g. success rate per attack."""
    figure, axis = plt.subplots(figsize=(1.1 * len(names) + 2, 3.2))
    bars = axis.bar(list(names), [100 * v for v in values], color="#4878a8")
    axis.bar_label(bars, fmt="%.1f%%", fontsize=8)
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 105)
    if title:
        axis.set_title(title, fontsize=10)
    _save(figure, path)


def first_changed(clean_labels: Tensor, adversarial_labels: Tensor, count: int) -> Tensor:
    """Indices of up to ``count`` examples, those whose prediction the attack changed first."""
    changed = (clean_labels != adversarial_labels).nonzero().flatten()
    unchanged = (clean_labels == adversarial_labels).nonzero().flatten()
    return torch.cat([changed, unchanged])[:count]
