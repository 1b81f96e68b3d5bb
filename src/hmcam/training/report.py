"""What a finished training run leaves for people: ``results.json``, ``results.csv``, ``report.md``, ``report.html``.

Written by the trainer (rank 0) after the last epoch, beside the files it keeps every epoch
(``config.json``, ``metrics.jsonl``, ``curves.png``, the checkpoints): the run summary with its
``run`` record (versions, machine, wall time), the per-epoch metrics as a table, and a short report
with the final and best metrics and the curves, rendered as a page by :mod:`hmcam.reporting.page`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def write_training_report(
    folder: Path, summary: dict[str, Any], history: Sequence[dict[str, Any]], resolved: dict[str, Any], started: float
) -> None:
    """Write the finished run's results, table and reports into ``folder``; ``started`` is this invocation's start."""
    from hmcam.core.storage import atomic_write, atomic_write_json
    from hmcam.reporting.page import write_run_page
    from hmcam.reporting.provenance import run_record
    from hmcam.reporting.tables import markdown_table, write_csv

    config = resolved["config"]
    evaluation = resolved["evaluation"]
    run = run_record("training", started, config.get("device"))
    atomic_write_json(folder / "results.json", {**summary, "run": run})
    write_csv(folder / "results.csv", history, EPOCH_COLUMNS)
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
    atomic_write(folder / "report.md", "\n".join(lines).encode())
    write_run_page(folder)
