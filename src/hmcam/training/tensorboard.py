"""Training curves for TensorBoard: each epoch's metrics as scalars in ``RUN/tensorboard/``.

With ``TrainConfig(tensorboard=True)`` (``hmcam train --tensorboard``) rank 0 writes, after every
epoch and besides ``metrics.jsonl`` and ``curves.png``, each numeric metric of the epoch's record
(losses, accuracies, learning rate, passes, seconds) as a scalar at step = epoch, under
``train/``, ``eval/`` or ``time/`` (:func:`scalar_tag`). ``tensorboard --logdir RUN/tensorboard``
shows them. A resumed run purges the events after the epoch it resumes from, so a run killed after
writing events it had not committed shows each epoch once. TensorBoard's event files are append-only
logs whose records carry checksums: a kill mid-write leaves a truncated last record that readers skip.

It needs the ``tensorboard`` package (the optional extra ``tensorboard``); :func:`require_tensorboard`
says so in one line before any work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The folder of the event files inside the run folder.
TENSORBOARD_DIR = "tensorboard"
#: The extra that installs TensorBoard, named in the error when it is missing.
EXTRA = "tensorboard"
#: Record keys that are not curves (the epoch is the step itself).
SKIPPED = frozenset({"epoch", "step", "batches"})
#: The metrics measured on the test set each epoch, and the epoch's wall times.
EVALUATION_KEYS = frozenset({"clean_accuracy", "robust_accuracy"})
TIME_KEYS = frozenset({"seconds", "train_seconds"})


def require_tensorboard() -> type[Any]:
    """The ``SummaryWriter`` class of torch; a one-line ImportError naming the extra when TensorBoard is missing."""
    # Deferred on purpose: torch's writer imports the tensorboard package, an optional extra.
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(f"--tensorboard needs TensorBoard: pip install 'hmcam[{EXTRA}]'") from None
    return SummaryWriter


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a metric: ``eval/clean_accuracy``, ``time/seconds``, else ``train/<key>``."""
    if key in EVALUATION_KEYS:
        return f"eval/{key}"
    if key in TIME_KEYS:
        return f"time/{key}"
    return f"train/{key}"


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The curves of one epoch's record: every finite number but the epoch and step counters, by tag."""
    scalars: dict[str, float] = {}
    for key, value in record.items():
        if key in SKIPPED or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            scalars[scalar_tag(key)] = float(value)
    return scalars


class TensorBoardLog:
    """Writes each finished epoch's scalars into ``folder``; does nothing when not ``enabled``.

    ``resumed_epochs`` is the number of epochs already committed: events at later steps, from a run
    killed before it committed them, are purged so that each epoch appears once.
    """

    def __init__(self, folder: str | Path, resumed_epochs: int = 0, enabled: bool = True) -> None:
        self.folder = Path(folder)
        self.writer: Any = None
        if enabled:
            writer = require_tensorboard()
            self.writer = writer(str(self.folder), purge_step=resumed_epochs + 1 if resumed_epochs else None)

    def add_epoch(self, record: Mapping[str, Any]) -> None:
        """Write the scalars of one epoch's record at step ``record["epoch"]`` and flush them to disk."""
        if self.writer is None:
            return
        step = int(record["epoch"])
        for tag, value in epoch_scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
