"""What a training run leaves for people: the history every epoch, the results and report at the end.

Every epoch the trainer (rank 0) rewrites ``metrics.jsonl`` (one JSON line per epoch) and
``curves.png`` from the whole history (:func:`write_history`), atomically, so a kill can neither
truncate the file nor leave it disagreeing with the state once a resumed run has rewritten it.
After the last epoch :func:`write_training_report` writes, through the run folder
(:class:`hmcam.reporting.run_folder.RunFolder`), ``results.json`` (the run summary with its ``run``
record: versions, machine, wall time), ``results.csv`` (the per-epoch metrics as a table) and
``report.md`` and ``report.html`` (the final and best metrics and the curves).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from hmcam.reporting.run_folder import RunFolder
from hmcam.reporting.tables import markdown_table
from hmcam.training.curves import save_curves

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"

#: The columns of ``results.csv``: one row per epoch of ``metrics.jsonl``.
EPOCH_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "clean_accuracy",
    "robust_accuracy",
    "passes_total",
    "train_seconds",
    "seconds",
)


def write_history(folder: RunFolder, history: Sequence[dict[str, Any]], title: str) -> None:
    """Rewrite ``metrics.jsonl`` and (with at least one epoch) ``curves.png``, titled ``title``, from ``history``."""
    folder.write_text(METRICS_FILE, "".join(json.dumps(record, sort_keys=True) + "\n" for record in history))
    if history:
        save_curves(folder.file(CURVES_FILE), history, title)


def write_training_report(
    folder: RunFolder, summary: dict[str, Any], history: Sequence[dict[str, Any]], resolved: dict[str, Any]
) -> None:
    """Write the finished run's results, per-epoch table and report into ``folder``.

    ``summary`` is what :meth:`hmcam.training.Trainer.fit` returns, ``history`` the per-epoch
    records and ``resolved`` the content of ``config.json``.
    """
    config = resolved["config"]
    evaluation = resolved["evaluation"]
    folder.write_results(summary)
    folder.write_table(history, EPOCH_COLUMNS)
    final, best = summary["final"], summary["best"] or {}
    method = resolved["method"]
    settings = ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in method.items()
        if key != "name"
    )
    robust = (
        f"PGD-{evaluation['steps']} at eps {evaluation['eps']:.4g} on the first {evaluation['examples']} test images"
        if evaluation["examples"]
        else "not measured"
    )
    lines = [
        f"# Training: {method['name']} on {resolved['dataset']['name']}, {config['model']}",
        "",
        f"Method `{method['name']}` ({settings or 'no settings'}); {summary['epochs']} epochs, batch "
        f"{config['batch_size']}, learning rate {config['lr']} ({config['schedule']}), seed {config['seed']}, "
        f"{resolved['world_size']} process(es). Robust accuracy: {robust}.",
        "",
        markdown_table(
            [{"": "last epoch", **final}, {"": f"best (epoch {best.get('epoch', '-')})", **best}],
            ["", "clean_accuracy", "robust_accuracy", "train_loss", "train_accuracy", "passes_total"],
        ),
        "![training curves](curves.png)",
        "",
        "Per-epoch metrics: `results.csv` (and `metrics.jsonl`); checkpoints `last.safetensors`, `best.safetensors`.",
        "",
    ]
    folder.write_report("\n".join(lines))
