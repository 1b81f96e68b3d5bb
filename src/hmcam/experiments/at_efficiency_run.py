"""One run of the equal-cost training comparison: train one arm with one seed at one budget, then score it.

Training goes through the one trainer (:func:`hmcam.training.train`), scoring through
:func:`hmcam.evaluation.evaluate_robustness`. The run's folder (:func:`arm_folder`) keeps both
resumable; the finished result is cached by the experiment framework under :func:`run_key`
(``docs/outputs.md``, Experiment folders).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hmcam.core.batching import fetch
from hmcam.core.distributed import resolve_device
from hmcam.data import load_dataset
from hmcam.evaluation import evaluate_robustness
from hmcam.experiments.at_efficiency_plan import ATTACKS, ROBUST_SUITE, Arm, Study, arm_epochs, budget_name
from hmcam.models import load_checkpoint
from hmcam.reporting.run_folder import json_ready
from hmcam.training import TrainConfig, train
from hmcam.training.config import RESUMABLE_CHANGES

#: The training fields that say nothing about what a run computes: where and how it runs.
PLACE_FIELDS = frozenset({*RESUMABLE_CHANGES, "device"})
#: The study's fields that decide how a run is scored.
SCORING_FIELDS = ("eps", "robust_examples", "attack_steps", "attack_alpha", "eval_batch_size")


def train_config(study: Study, arm: Arm, seed: int, folder: Path, **common: Any) -> TrainConfig:
    """The :class:`~hmcam.training.TrainConfig` of one run; ``common`` adds fields such as ``device``."""
    fields: dict[str, Any] = {
        "dataset": study.dataset,
        "model": study.model,
        "method": arm.method,
        "method_kwargs": dict(arm.kwargs),
        "epochs": arm_epochs(study, arm),
        "seed": seed,
        "test_limit": study.test_limit,
        "eval_eps": study.eps,
        "out": str(folder),
        **study.train,
        **arm.overrides,
        **common,
    }
    return TrainConfig(**fields)


def arm_folder(out: Path, study: Study, arm: Arm, seed: int) -> Path:
    """Where one run (``budget-B/STUDY/ARM-seedS`` in ``out``) keeps its training and evaluation state."""
    return out / budget_name(study.budget) / study.name / f"{arm.label}-seed{seed}"


def run_key(budget: float | None, study: str, arm: str, seed: int) -> str:
    """The name of one run's cached result: ``budget-B-STUDY-ARM-seedS`` (``own-epochs-...`` without a budget)."""
    return f"{budget_name(budget)}-{study}-{arm}-seed{seed}"


def run_settings(study: Study, arm: Arm, seed: int) -> dict[str, Any]:
    """What one run computes, as JSON: its training configuration (less where it runs) and its scoring settings."""
    config = dataclasses.asdict(train_config(study, arm, seed, Path(".")))
    kept = {name: value for name, value in config.items() if name not in PLACE_FIELDS}
    ready: dict[str, Any] = json_ready({**kept, **{name: getattr(study, name) for name in SCORING_FIELDS}})
    return ready


def score(
    study: Study, folder: Path, checkpoint: str, *, device: str, data_root: str | None, progress: bool
) -> dict[str, Any]:
    """The accuracy of ``checkpoint`` under each attack alone, their worst case and AutoAttack, on the robust subset.

    The evaluations keep their resumable state in ``folder / "evaluation-state"`` (the paper's
    attacks) and ``folder / "autoattack-state"`` (:data:`ROBUST_SUITE`).
    """
    target = resolve_device(device)
    model, _ = load_checkpoint(checkpoint, device=target)
    test = load_dataset(study.dataset, "test", root=data_root, download=False, limit=study.robust_examples)
    count = len(test.labels)
    images, labels = fetch(test, range(count))
    evaluation = evaluate_robustness(
        model,
        images.to(target),
        labels.to(target),
        ATTACKS,
        eps=study.eps,
        steps=study.attack_steps,
        alpha=study.attack_alpha,
        standalone=True,
        batch_size=study.eval_batch_size,
        check_examples=0,
        state_dir=folder / "evaluation-state",
        progress=progress,
    )
    per_attack = {report.name: report.standalone_robust_accuracy for report in evaluation.attacks}
    suite = evaluate_robustness(
        model,
        images.to(target),
        labels.to(target),
        suite=ROBUST_SUITE,
        eps=study.eps,
        batch_size=study.eval_batch_size,
        check_examples=0,
        state_dir=folder / "autoattack-state",
        progress=progress,
    )
    return {
        "worst": evaluation.robust_accuracy,
        **per_attack,
        "autoattack": suite.robust_accuracy,
        "robust_examples": count,
    }


def _curve(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Per epoch: passes per training example so far, training minutes so far, clean and robust accuracy.
    return [
        {
            "epoch": record["epoch"],
            "passes": record["passes_total"] / record["batches"],
            "minutes": sum(r["train_seconds"] for r in history[: index + 1]) / 60,
            "clean": record["clean_accuracy"],
            "robust": record["robust_accuracy"],
        }
        for index, record in enumerate(history)
    ]


def run_one(
    out: Path, study: Study, arm: Arm, seed: int, *, device: str = "cpu", data_root: str | None = None, progress: bool
) -> dict[str, Any]:
    """Train (or resume) and score one arm with one seed at ``study``'s budget in ``out``; returns its result."""
    folder = arm_folder(out, study, arm, seed)
    config = train_config(study, arm, seed, folder / "train", device=device, data_root=data_root, progress=progress)
    summary = train(config, resume=True)
    history = [json.loads(line) for line in Path(summary["files"]["metrics.jsonl"]).read_text().splitlines() if line]
    scores = score(
        study, folder, summary["files"]["last.safetensors"], device=device, data_root=data_root, progress=progress
    )
    final = summary["final"]
    return {
        "study": study.name,
        "arm": arm.label,
        "method": summary["method"],
        "seed": seed,
        "budget": study.budget,
        "epochs": summary["epochs"],
        "clean": final["clean_accuracy"],
        **{name: scores[name] for name in ATTACKS},
        "worst": scores["worst"],
        "autoattack": scores["autoattack"],
        "robust_examples": scores["robust_examples"],
        "train_minutes": sum(record["train_seconds"] for record in history) / 60,
        # Passes over minibatches, divided by the minibatches of an epoch: passes per training example.
        "passes": final["passes_total"] / final["batches"],
        # Optimizer steps over minibatches of an epoch: how many weight updates each training example fed.
        "updates": summary["steps"] / final["batches"],
        "curve": _curve(history),
    }
