"""Runs that go wrong: a training loss that is not finite, and training accuracy stuck at chance.

A loss that is not finite stops the run at that minibatch (:func:`stop_if_not_finite`), on every
process at once, before anything of the epoch is written, so the last good checkpoint and state stay
as they were. Training accuracy at chance for ``collapse_epochs`` epochs in a row is a collapse
(:func:`collapse_message`): the trainer reports it with a :class:`TrainingCollapseWarning` and a
``collapse`` note in the epoch's metrics, or stops with :class:`TrainingCollapsed` after saving the
epoch when ``stop_on_collapse`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from hmcam.core.distributed import DistributedContext, any_process
from hmcam.training.methods import StepMeter


class TrainingCollapseWarning(UserWarning):
    """Training accuracy has stayed at chance for ``collapse_epochs`` epochs: the run is learning nothing."""


class TrainingCollapsed(RuntimeError):
    """Raised instead of :class:`TrainingCollapseWarning` under ``stop_on_collapse``, once the epoch is saved."""


def chance_streak(history: Sequence[dict[str, Any]], threshold: float) -> int:
    """How many of the last epochs of ``history`` in a row had a training accuracy of at most ``threshold``."""
    streak = 0
    for record in reversed(history):
        if record["train_accuracy"] > threshold:
            break
        streak += 1
    return streak


def collapse_message(history: Sequence[dict[str, Any]], num_classes: int, epochs: int, margin: float) -> str | None:
    """Why the run has collapsed, or None: training accuracy at most ``1 / num_classes + margin`` for ``epochs`` epochs.

    ``history`` holds the per-epoch records up to the epoch just trained; ``epochs = 0`` turns the
    check off.
    """
    if epochs == 0:
        return None
    threshold = 1.0 / num_classes + margin
    streak = chance_streak(history, threshold)
    if streak < epochs:
        return None
    return (
        f"training accuracy has stayed at chance (<= {threshold:.3f} for {num_classes} classes) "
        f"for {streak} epochs in a row, up to epoch {history[-1]['epoch']}: the run is not learning. Lower the "
        "learning rate or warm it up (warmup_epochs); collapse_epochs=0 turns this check off"
    )


def stop_if_not_finite(
    meter: StepMeter,
    context: DistributedContext,
    *,
    epoch: int,
    batch: int,
    batches: int,
    step: int,
    run_dir: str | os.PathLike[str],
) -> None:
    """Raise FloatingPointError on every process when the loss ``meter`` recorded on any of them is not finite.

    ``epoch`` is the number of completed epochs (the one that failed is ``epoch + 1``), ``batch``
    the failing minibatch (0-based) of ``batches`` and ``step`` the optimizer steps taken so far;
    the message says what of the run in ``run_dir`` was kept.
    """
    loss = meter.loss
    bad = loss is not None and not bool(torch.isfinite(loss).item())
    # Every process stops at the same minibatch, whichever saw the bad loss.
    if not any_process(bad, context):
        return
    value = f"{loss.item() / meter.examples}" if loss is not None and bad else "non-finite on another process"
    kept = (
        f"the last good checkpoint and state (epoch {epoch}) in {run_dir} were kept"
        if epoch
        else "no epoch had been completed, so nothing was saved"
    )
    raise FloatingPointError(
        f"the training loss became {value} in epoch {epoch + 1}, minibatch {batch + 1} of "
        f"{batches} (optimizer step {step}); training stopped there and {kept}. "
        "Lower the learning rate or warm it up (warmup_epochs)"
    )
