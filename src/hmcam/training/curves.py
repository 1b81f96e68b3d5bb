"""The training curves of a run as a PNG: loss, and train / clean / robust accuracy per epoch."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hmcam.core.storage import atomic_write

ACCURACY_SERIES = (
    ("train_accuracy", "train (as trained on)"),
    ("clean_accuracy", "test, clean"),
    ("robust_accuracy", "test, PGD"),
)


def render_curves(history: Sequence[dict[str, Any]], title: str) -> bytes:
    """PNG bytes of two panels (training loss; accuracies) over the epochs of ``history``.

    ``history`` holds the per-epoch records of ``metrics.jsonl``; a series whose values are None
    (robust accuracy when it was not measured) is left out. Uses matplotlib's object API, so no
    global backend is touched.
    """
    if not history:
        raise ValueError("no epochs to plot")
    epochs = [record["epoch"] for record in history]
    figure = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    loss_axis.plot(epochs, [record["train_loss"] for record in history], marker="o")
    loss_axis.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key, label in ACCURACY_SERIES:
        values = [record.get(key) for record in history]
        if all(v is not None for v in values):
            accuracy_axis.plot(epochs, values, marker="o", label=label)
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0.0, 1.0))
    accuracy_axis.legend(loc="lower right")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_curves(path: str | os.PathLike[str], history: Sequence[dict[str, Any]], title: str) -> None:
    """Write :func:`render_curves` to ``path`` atomically."""
    atomic_write(path, render_curves(history, title))
