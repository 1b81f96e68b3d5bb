"""Figures people look at: adversarial-example grids and bar charts of attack results.

Drawn with matplotlib's object API (a :class:`~matplotlib.figure.Figure` on an Agg canvas), so no
global backend or pyplot state is touched.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from hmcam.core.storage import atomic_write


def _figure(figsize: tuple[float, float]) -> Figure:
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike[str]) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buffer.getvalue())


def _show(axis: Axes, image: Tensor, title: str, color: str = "black") -> None:
    picture = image.detach().cpu().permute(1, 2, 0).numpy()
    if picture.shape[2] == 1:
        axis.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1)
    else:
        axis.imshow(picture.clip(0, 1))
    axis.set_title(title, fontsize=7, color=color)
    axis.axis("off")


def save_adversarial_grid(
    path: str | os.PathLike[str],
    clean: Tensor,
    adversarial: Tensor,
    clean_labels: Tensor,
    adversarial_labels: Tensor,
    class_names: Sequence[str],
    title: str = "",
) -> None:
    """A grid of three rows per example: original, perturbation and adversarial example.

    The perturbation is rescaled to [0, 1]; each image is titled with the model's prediction (red
    when the attack changed it).
    """
    count = len(clean)
    figure = _figure((1.3 * count, 4.3))
    axes = figure.subplots(3, count, squeeze=False)
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
        axes[row, 0].text(
            -0.15, 0.5, label, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8
        )
    if title:
        figure.suptitle(title, fontsize=9)
    _save(figure, path)


def save_chain_grid(
    path: str | os.PathLike[str],
    clean: Tensor,
    samples: Tensor,
    predictions: Tensor,
    class_names: Sequence[str],
    title: str = "",
) -> None:
    """One row per example: the original, then each sample of its chain titled with the prediction."""
    steps, count = samples.shape[0], samples.shape[1]
    figure = _figure((1.3 * (steps + 1), 1.4 * count))
    axes = figure.subplots(count, steps + 1, squeeze=False)
    for row in range(count):
        _show(axes[row, 0], clean[row], "original")
        for step in range(steps):
            _show(axes[row, step + 1], samples[step, row], f"s={step + 1}: {class_names[int(predictions[step, row])]}")
    if title:
        figure.suptitle(title, fontsize=9)
    _save(figure, path)


def save_bar_chart(
    path: str | os.PathLike[str],
    names: Sequence[str],
    values: Sequence[float] | Mapping[str, Sequence[float]],
    ylabel: str,
    title: str = "",
) -> None:
    """A labelled bar chart of fractions shown in percent, e.g. success rate per attack.

    ``values`` is one value per name, or a mapping from a series label to one value per name,
    drawn as grouped bars with a legend (e.g. white-box and black-box success per attack).
    """
    series = dict(values) if isinstance(values, Mapping) else {"": values}
    figure = _figure((1.1 * len(names) * max(1, 0.7 * len(series)) + 2, 3.2))
    axis = figure.subplots()
    width = 0.8 / len(series)
    colours = ("#4878a8", "#e08a3c", "#6a9f58", "#b5524e")
    for index, (label, numbers) in enumerate(series.items()):
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(names))]
        bars = axis.bar(positions, [100 * v for v in numbers], width, label=label or None, color=colours[index % 4])
        axis.bar_label(bars, fmt="%.1f", fontsize=7)
    axis.set_xticks(range(len(names)), list(names))
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 108)
    if len(series) > 1:
        axis.legend(fontsize=8, loc="upper left")
    if title:
        axis.set_title(title, fontsize=10)
    _save(figure, path)


def first_changed(clean_labels: Tensor, adversarial_labels: Tensor, count: int) -> Tensor:
    """Indices of up to ``count`` examples, those whose prediction the attack changed first."""
    changed = (clean_labels != adversarial_labels).nonzero().flatten()
    unchanged = (clean_labels == adversarial_labels).nonzero().flatten()
    return torch.cat([changed, unchanged])[:count]


def save_training_curves(
    path: str | os.PathLike[str], curves: Mapping[str, Sequence[Sequence[dict[str, Any]]]], title: str = ""
) -> None:
    """Clean and robust accuracy per epoch against gradient passes and against wall time (the paper's Fig. 5).

    ``curves`` maps a method's label to its runs (one per seed), each a list of per-epoch points with
    ``passes``, ``minutes``, ``clean`` and ``robust`` (None when not measured). Each method has one
    colour; its seeds are drawn as separate lines.
    """
    figure = _figure((10, 7))
    axes = figure.subplots(2, 2, sharey="row")
    colours = [f"C{index % 10}" for index in range(len(curves))]
    for (label, runs), colour in zip(curves.items(), colours, strict=True):
        for seed, points in enumerate(runs):
            for row, metric in enumerate(("clean", "robust")):
                kept = [p for p in points if p[metric] is not None]
                for column, axis_name in enumerate(("passes", "minutes")):
                    axes[row][column].plot(
                        [p[axis_name] for p in kept],
                        [100 * float(p[metric]) for p in kept],
                        color=colour,
                        marker=".",
                        linewidth=1.2,
                        alpha=0.9 if seed == 0 else 0.45,
                        label=label if seed == 0 else None,
                    )
    for column, axis_name in enumerate(("gradient passes per example", "training time (minutes)")):
        axes[1][column].set_xlabel(axis_name)
    axes[0][0].set_ylabel("clean accuracy (%)")
    axes[1][0].set_ylabel("PGD accuracy (%)")
    for axis in (axis for row in axes for axis in row):
        axis.grid(alpha=0.3)
    axes[0][1].legend(fontsize=8, loc="lower right")
    if title:
        figure.suptitle(title, fontsize=10)
    _save(figure, path)


def save_heatmaps(
    path: str | os.PathLike[str],
    matrices: Mapping[str, Tensor],
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
) -> None:
    """One annotated heatmap per matrix (e.g. success rate per source and target for each attack), side by side."""
    figure = _figure((3.2 * len(matrices) + 1, 0.55 * len(rows) + 2))
    axes = figure.subplots(1, len(matrices), squeeze=False)[0]
    high = max(float(matrix.max()) for matrix in matrices.values()) or 1.0
    for axis, (name, matrix) in zip(axes, matrices.items(), strict=True):
        axis.imshow(matrix.cpu().numpy(), cmap="viridis", vmin=0, vmax=high)
        axis.set_title(name, fontsize=9)
        axis.set_xticks(range(len(columns)), list(columns), rotation=45, ha="right", fontsize=7)
        axis.set_yticks(range(len(rows)), list(rows) if axis is axes[0] else [], fontsize=7)
        for i in range(len(rows)):
            for j in range(len(columns)):
                value = float(matrix[i, j])
                axis.text(
                    j,
                    i,
                    f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value < high / 2 else "black",
                )
    figure.suptitle(title, fontsize=10)
    _save(figure, path)


def save_curve_panels(
    path: str | os.PathLike[str],
    x: Sequence[float],
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], bool]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    log_x: bool = False,
) -> None:
    """Side-by-side panels of curves over ``x``; each curve is ``(values, solid)``, dashed when not solid.

    The paper's Fig. 2 and Fig. 3 style: one panel per attack, one line per source -> target pair,
    solid for white-box and dashed for black-box.
    """
    figure = _figure((5 * len(panels), 3.8))
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for axis, (name, curves) in zip(axes, panels.items(), strict=True):
        for index, (label, (values, solid)) in enumerate(curves.items()):
            axis.plot(
                list(x), list(values), linestyle="-" if solid else "--", marker=".", color=f"C{index % 10}", label=label
            )
        axis.set_title(name, fontsize=10)
        axis.set_xlabel(xlabel)
        if log_x:
            axis.set_xscale("log")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title:
        figure.suptitle(title, fontsize=10)
    _save(figure, path)


def save_embedding(path: str | os.PathLike[str], points: Tensor, groups: Sequence[str], title: str) -> None:
    """A 2-D scatter of ``points`` ([P, 2]) coloured by group, in the order groups first appear (Fig. 1)."""
    figure = _figure((5.5, 4.5))
    axis = figure.subplots()
    for index, group in enumerate(dict.fromkeys(groups)):
        chosen = [i for i, name in enumerate(groups) if name == group]
        marker = "*" if group == "clean" else "o"
        size = 120 if group == "clean" else 12
        colour = "black" if group == "clean" else f"C{index % 10}"
        axis.scatter(points[chosen, 0], points[chosen, 1], s=size, marker=marker, color=colour, alpha=0.7, label=group)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=7)
    axis.set_title(title, fontsize=9)
    _save(figure, path)
