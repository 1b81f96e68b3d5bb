"""Adversarial training at equal cost (paper Tables 4, 5, 7 and Fig. 5): every method, its robustness and its time.

A *study* is one dataset, network and threat model with a list of method *arms*; a *scale* is a list
of studies with the seeds to repeat them. Each arm is trained with the one trainer
(:func:`hmcam.training.train`) for either a budget of gradient passes per training example (the
``smoke`` and ``small`` scales: natural training, PGD-AT, Free-m, YOPO-m-n, fast AT, TRADES, CAT and
CAT-CE, each given ``round(budget / passes_per_batch)`` epochs, so they are compared at equal cost)
or the paper's own epochs and schedules (the ``paper`` scale). Its final model is then scored: clean
accuracy on the test set, and PGD-k, M-PGD-k, CW-L-inf-k and the per-example worst case over them on a
fixed subset (the first ``robust_examples`` test images), through
:func:`hmcam.evaluation.evaluate_robustness` with each attack also run on every example.

``RUN_DIR`` receives ``config.json`` (the plan); one folder per run (``STUDY/ARM-seedS/``) holding the
trainer's run folder (``train/``, with its per-epoch ``metrics.jsonl``), the evaluation's resumable
state and ``result.json``, written last, which marks the run done; and, once all runs are done,
``results.csv`` (one row per run), ``summary.csv`` and ``results.json`` (mean and standard deviation
over seeds, the differences between arms and whether each exceeds the seed spread, the claims),
``STUDY-curves.png`` (clean and PGD accuracy per epoch against passes and against wall time: Fig. 5),
``report.md`` and ``report.html``, which give the paper's figure, ours and a verdict for each claim. A run killed at any
point continues where it stopped: finished runs are skipped, training resumes from its state file
and evaluation from its saved chunks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hmcam.core.storage import atomic_write, atomic_write_json

#: The attacks of the table, in the paper's column order; the worst case is over all of them.
ATTACKS = ("pgd", "mpgd", "cwlinf")
#: The figures reported per run, in table order (accuracies are fractions, time in minutes).
METRICS = ("clean", "pgd", "mpgd", "cwlinf", "worst", "train_minutes", "passes")
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Arm:
    """One training method of a study: a row label, the registered method name and its arguments.

    ``epochs`` fixes the run's length (the paper's settings); None derives it from the study's
    budget. ``overrides`` are further :class:`~hmcam.training.TrainConfig` fields of this arm only
    (its learning rate, schedule or milestones).
    """

    label: str
    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A dataset, network and L-inf threat model, the arms trained on it and how they are scored.

    ``budget`` is the gradient passes per training example every arm without its own ``epochs``
    gets; ``train`` holds the :class:`~hmcam.training.TrainConfig` fields shared by all arms
    (batch size, learning rate, schedule, subset sizes). Robustness is measured on the first
    ``robust_examples`` test images with ``attack_steps`` steps and step ``attack_alpha`` (None:
    each attack's own rule); clean accuracy on ``test_limit`` images (None: the whole test set).
    """

    name: str
    dataset: str
    model: str
    eps: float
    arms: tuple[Arm, ...]
    budget: float | None = None
    train: dict[str, Any] = field(default_factory=dict)
    test_limit: int | None = None
    robust_examples: int = 1000
    attack_steps: int = 20
    attack_alpha: float | None = None
    reference: str = "PGD-AT"


@dataclass(frozen=True)
class Scale:
    """A named set of studies and the seeds each arm is trained with."""

    name: str
    description: str
    studies: tuple[Study, ...]
    seeds: tuple[int, ...]


def _equal_cost_arms(
    eps: float, steps: int, replays: int, yopo: tuple[int, int], cat: tuple[int, int]
) -> tuple[Arm, ...]:
    attack = {"eps": eps, "alpha": 2.5 * eps / steps, "steps": steps}
    return (
        Arm("natural", "natural"),
        Arm("PGD-AT", "pgd", attack),
        Arm("Free", "free", {"eps": eps, "replays": replays}),
        Arm("YOPO", "yopo", {"eps": eps, "alpha": 2 * eps / yopo[1], "full_passes": yopo[0], "layer_steps": yopo[1]}),
        # Fast AT's own schedule is the cyclic one (Wong et al. 2020).
        Arm("fast", "fast", {"eps": eps}, overrides={"schedule": "cyclic"}),
        Arm("TRADES", "trades", {**attack, "beta": 6.0}),
        Arm("CAT", "cat", {"eps": eps, "replays": cat[0], "chain_steps": cat[1]}),
        Arm("CAT-CE", "cat-ce", {"eps": eps, "replays": cat[0], "chain_steps": cat[1]}),
    )


def _paper_cifar_arms(eps: float) -> tuple[Arm, ...]:
    # Section 5.3: PGD-10 AT 105 epochs at 0.05 decayed at 79, 90, 100; Free-8 and YOPO-5-3 40 epochs at 0.2
    # decayed at 30 and 36. CAT's epochs are N / (T K) (Algorithm 3) with PGD-AT's schedule scaled to them.
    pgd_schedule = {"lr": 0.05, "milestones": (79, 90, 100)}
    short_schedule = {"lr": 0.2, "milestones": (30, 36)}
    cat_schedule = {"lr": 0.05, "milestones": (79 / 105, 90 / 105, 100 / 105)}
    return (
        Arm("PGD-AT", "pgd", {"eps": eps, "alpha": 2 / 255, "steps": 10}, 105, pgd_schedule),
        Arm("Free", "free", {"eps": eps, "replays": 8}, 40, short_schedule),
        Arm("YOPO", "yopo", {"eps": eps, "alpha": 2 / 255, "full_passes": 5, "layer_steps": 3}, 40, short_schedule),
        Arm("fast", "fast", {"eps": eps, "alpha": 10 / 255}, 15, {"lr": 0.2, "schedule": "cyclic"}),
        Arm("TRADES", "trades", {"eps": eps, "alpha": 2 / 255, "steps": 10, "beta": 6.0}, 105, pgd_schedule),
        Arm("CAT", "cat", {"eps": eps, "replays": 4, "chain_steps": 1}, 26, cat_schedule),
        Arm("CAT-CE", "cat-ce", {"eps": eps, "replays": 4, "chain_steps": 1}, 26, cat_schedule),
    )


def _paper_mnist_arms() -> tuple[Arm, ...]:
    # Section 5.3, Table 7: PGD-40 AT 55 epochs at 0.1 decayed at 45; Free-10 and CAT on the same schedule
    # divided by their replays.
    schedule = {"lr": 0.1, "milestones": (45 / 55,)}
    return (
        Arm("PGD-AT", "pgd", {"eps": 0.3, "alpha": 0.01, "steps": 40}, 55, schedule),
        Arm("Free", "free", {"eps": 0.3, "replays": 10}, 6, schedule),
        Arm("CAT", "cat", {"eps": 0.3, "replays": 4, "chain_steps": 1}, 14, schedule),
        Arm("CAT-CE", "cat-ce", {"eps": 0.3, "replays": 4, "chain_steps": 1}, 14, schedule),
    )


_CIFAR_TRAIN = {"batch_size": 256, "weight_decay": 5e-4, "momentum": 0.9, "augment": "crop-flip", "eval_subset": 1000}

#: The scales of ``hmcam experiment at-efficiency``.
SCALES: dict[str, Scale] = {
    "smoke": Scale(
        "smoke",
        "seconds: 192 Fashion-MNIST images, LeNet, eps 0.1, a budget of 6 passes per example, 2 seeds",
        (
            Study(
                "fashion-mnist-lenet",
                "fashion-mnist",
                "lenet",
                0.1,
                _equal_cost_arms(0.1, steps=2, replays=2, yopo=(2, 2), cat=(2, 1)),
                budget=6,
                # Too short to learn much: the collapse warning would only be noise.
                train={
                    "batch_size": 64,
                    "lr": 0.05,
                    "train_limit": 192,
                    "eval_subset": 32,
                    "eval_steps": 3,
                    "collapse_epochs": 0,
                },
                test_limit=128,
                robust_examples=32,
                attack_steps=3,
            ),
        ),
        (0, 1),
    ),
    "small": Scale(
        "small",
        "a few hours on 2 CPU cores: Fashion-MNIST (60k / 10k), LeNet, eps 0.1, 40 passes per example, 2 seeds",
        (
            Study(
                "fashion-mnist-lenet",
                "fashion-mnist",
                "lenet",
                0.1,
                _equal_cost_arms(0.1, steps=7, replays=8, yopo=(5, 3), cat=(4, 1)),
                budget=40,
                train={"batch_size": 128, "lr": 0.05, "warmup_epochs": 0.5, "eval_subset": 500, "eval_steps": 10},
                robust_examples=1000,
                attack_steps=20,
            ),
        ),
        (0, 1),
    ),
    "paper": Scale(
        "paper",
        "the paper's settings (Section 5.3): CIFAR-10 PreAct-ResNet18 and WRN-34-10 at eps 8/255, "
        "MNIST SmallCNN at eps 0.3; days on one GPU",
        (
            Study(
                "cifar10-preact-resnet18",
                "cifar10",
                "preact_resnet18",
                8 / 255,
                _paper_cifar_arms(8 / 255),
                train=_CIFAR_TRAIN,
                robust_examples=10000,
                attack_steps=20,
                attack_alpha=2 / 255,
            ),
            Study(
                "cifar10-wrn34-10",
                "cifar10",
                "wrn34_10",
                8 / 255,
                _paper_cifar_arms(8 / 255),
                train=_CIFAR_TRAIN,
                robust_examples=10000,
                attack_steps=20,
                attack_alpha=2 / 255,
            ),
            Study(
                "mnist-smallcnn",
                "mnist",
                "smallcnn",
                0.3,
                _paper_mnist_arms(),
                train={"batch_size": 256, "weight_decay": 5e-4, "momentum": 0.9, "eval_subset": 1000},
                robust_examples=10000,
                attack_steps=40,
                attack_alpha=0.01,
            ),
        ),
        (0, 1, 2, 3, 4),
    ),
}


def restrict(
    scale: Scale,
    *,
    seeds: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    budget: float | None = None,
    train_limit: int | None = None,
) -> Scale:
    """``scale`` with other seeds, only the arms labelled or named in ``methods``, another budget or training subset.

    Every name in ``methods`` must match an arm (by label, case-insensitive, or by method name) of
    every study; unknown names are an error that lists the arms.
    """
    if seeds is not None:
        if not seeds or len(set(seeds)) != len(seeds) or any(isinstance(s, bool) or s < 0 for s in seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)}")
    if budget is not None and (not math.isfinite(budget) or budget <= 0):
        raise ValueError(f"budget must be a positive number of passes per example, got {budget}")
    if train_limit is not None and train_limit < 1:
        raise ValueError(f"train_limit must be >= 1, got {train_limit}")
    studies = []
    for study in scale.studies:
        arms = study.arms
        if methods is not None:
            wanted = {name.lower() for name in methods}
            known = {arm.label.lower() for arm in arms} | {arm.method for arm in arms}
            unknown = sorted(wanted - known)
            if unknown:
                raise ValueError(f"unknown method(s) {unknown} for {study.name}; choose from {[a.label for a in arms]}")
            arms = tuple(arm for arm in arms if arm.label.lower() in wanted or arm.method in wanted)
        train = {**study.train, **({"train_limit": train_limit} if train_limit is not None else {})}
        studies.append(
            dataclasses.replace(study, arms=arms, train=train, budget=study.budget if budget is None else budget)
        )
    return dataclasses.replace(scale, studies=tuple(studies), seeds=tuple(seeds) if seeds is not None else scale.seeds)


def planned_passes(study: Study, arm: Arm) -> float:
    """The full forward+backward passes per minibatch that ``arm`` plans on ``study``'s network.

    YOPO's cost depends on the share of the first layer in the network, which the method measures
    when it is set up: it is set up here on a freshly built network, on the CPU, in one process.
    """
    from hmcam.core.distributed import DistributedContext
    from hmcam.data import dataset_info
    from hmcam.models import build_model
    from hmcam.training import build_method
    from hmcam.training.examples import ExampleState
    from hmcam.training.methods import MethodSetup

    method = build_method(arm.method, dataset=study.dataset, **arm.kwargs)
    try:
        return method.passes_per_batch()
    except RuntimeError:
        info = dataset_info(study.dataset)
        context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
        network = build_model(study.model, num_classes=info.num_classes, in_channels=info.input_shape[0])
        batch = int(study.train.get("batch_size", 128))
        method.setup(
            MethodSetup(
                dataset_size=1,
                input_shape=tuple(info.input_shape),
                num_classes=info.num_classes,
                device=context.device,
                distributed=context,
                model=network,
                examples=ExampleState(1, context),
                batch_size=batch,
                process_batch=batch,
                batches_per_epoch=1,
                epochs=1,
                seed=0,
            )
        )
        return method.passes_per_batch()


def arm_epochs(study: Study, arm: Arm) -> int:
    """The epochs ``arm`` trains for: its own, else the study's budget over its passes per minibatch (at least 1)."""
    if arm.epochs is not None:
        return arm.epochs
    if study.budget is None:
        raise ValueError(f"{study.name}: arm {arm.label} has no epochs and the study no budget")
    return max(1, round(study.budget / planned_passes(study, arm)))


def train_config(study: Study, arm: Arm, seed: int, folder: Path, **common: Any) -> Any:
    """The :class:`~hmcam.training.TrainConfig` of one run; ``common`` adds fields such as ``device``."""
    from hmcam.training import TrainConfig

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


def run_folder(out: Path, study: Study, arm: Arm, seed: int) -> Path:
    """Where one run keeps its training, evaluation state and result."""
    return out / study.name / f"{arm.label}-seed{seed}"


def _evaluate(
    study: Study, folder: Path, checkpoint: str, device: str, data_root: str | None, progress: bool
) -> dict[str, Any]:
    from hmcam.core.batching import fetch
    from hmcam.core.distributed import resolve_device
    from hmcam.data import load_dataset
    from hmcam.evaluation import evaluate_robustness
    from hmcam.models import load_checkpoint

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
        check_examples=0,
        state_dir=folder / "evaluation-state",
        progress=progress,
    )
    per_attack = {report.name: report.standalone_robust_accuracy for report in evaluation.attacks}
    return {"worst": evaluation.robust_accuracy, **per_attack, "robust_examples": count}


def run_one(
    out: Path, study: Study, arm: Arm, seed: int, *, device: str = "cpu", data_root: str | None = None, progress: bool
) -> dict[str, Any]:
    """Train and score one arm with one seed (or read its finished result); returns its ``result.json``."""
    from hmcam.training import train

    folder = run_folder(out, study, arm, seed)
    done = folder / RESULT_FILE
    if done.exists():
        result: dict[str, Any] = json.loads(done.read_text())
        return result
    config = train_config(study, arm, seed, folder / "train", device=device, data_root=data_root, progress=progress)
    summary = train(config, resume=True)
    history = [json.loads(line) for line in Path(summary["files"]["metrics.jsonl"]).read_text().splitlines() if line]
    scores = _evaluate(study, folder, summary["files"]["last.safetensors"], device, data_root, progress)
    final = summary["final"]
    result = {
        "study": study.name,
        "arm": arm.label,
        "method": summary["method"],
        "seed": seed,
        "epochs": summary["epochs"],
        "clean": final["clean_accuracy"],
        **{name: scores[name] for name in ATTACKS},
        "worst": scores["worst"],
        "robust_examples": scores["robust_examples"],
        "train_minutes": sum(record["train_seconds"] for record in history) / 60,
        # Passes over minibatches, divided by the minibatches of an epoch: passes per training example.
        "passes": final["passes_total"] / final["batches"],
        "curve": [
            {
                "epoch": record["epoch"],
                "passes": record["passes_total"] / record["batches"],
                "minutes": sum(r["train_seconds"] for r in history[: index + 1]) / 60,
                "clean": record["clean_accuracy"],
                "robust": record["robust_accuracy"],
            }
            for index, record in enumerate(history)
        ],
    }
    atomic_write_json(done, result)
    return result


def spread_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), minimum and maximum of one metric over seeds."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def compare(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """The difference of means ``first - second`` and whether it exceeds the seed spread.

    A difference exceeds the spread when the two ranges over seeds do not overlap: every seed of one
    arm beats every seed of the other. With one seed per arm nothing can exceed it.
    """
    difference = statistics.fmean(first) - statistics.fmean(second)
    separated = len(first) > 1 and len(second) > 1 and (min(first) > max(second) or max(first) < min(second))
    return {"difference": difference, "exceeds_spread": separated}


def summarize(results: Sequence[dict[str, Any]], scale: Scale) -> dict[str, Any]:
    """Per study: each arm's mean and spread of every metric, and every arm against every other one."""
    studies: dict[str, Any] = {}
    for study in scale.studies:
        mine = [result for result in results if result["study"] == study.name]
        rows = {arm.label: [result for result in mine if result["arm"] == arm.label] for arm in study.arms}
        arms = {
            label: {m: spread_summary([run[m] for run in runs]) for m in METRICS}
            for label, runs in rows.items()
            if runs
        }
        differences = {
            f"{a} - {b}": {m: compare([r[m] for r in rows[a]], [r[m] for r in rows[b]]) for m in METRICS}
            for a in arms
            for b in arms
            if a != b
        }
        studies[study.name] = {"arms": arms, "differences": differences, "seeds": list(scale.seeds)}
    return studies


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


#: The paper's differences, CAT minus each rival, in points on PreAct-ResNet18 / CIFAR-10 (Table 4).
PAPER_DIFFERENCES = {
    "PGD-AT": {"pgd": 7.8, "mpgd": 9.1, "cwlinf": 2.4, "clean": -3.4},
    "Free": {"pgd": 7.3, "mpgd": 6.7, "cwlinf": 4.3},
    "YOPO": {"pgd": 6.8, "mpgd": 6.7, "cwlinf": 4.4},
}
#: The paper's training minutes per method on that table, for the time ratios it implies.
PAPER_MINUTES = {"PGD-AT": 132, "Free": 110, "YOPO": 66, "CAT": 114}
# Clean accuracy CAT may give up against PGD-AT and still match the paper's "about the same" (Table 4: -3.4).
CLEAN_TOLERANCE = 0.034


def _outcome(comparison: dict[str, Any]) -> str:
    # "higher" only when every seed of the first arm beats every seed of the second: a difference
    # inside the seed spread is not evidence, as in the attack experiments' bootstrap verdicts.
    if comparison["exceeds_spread"]:
        return "higher" if comparison["difference"] > 0 else "lower"
    return "tie"


def _differences(summary: dict[str, Any], first: str, second: str, metrics: Sequence[str]) -> list[str]:
    parts = []
    for metric in metrics:
        comparison = summary["differences"][f"{first} - {second}"][metric]
        mark = "" if comparison["exceeds_spread"] else " (within the seed spread)"
        parts.append(f"{100 * comparison['difference']:+.1f} {metric}{mark}")
    return parts


def claims(summary: dict[str, Any], reference: str = "PGD-AT") -> list[dict[str, str]]:
    """The paper's claims about CAT, each with the paper's figures, this study's and the verdict.

    A robustness claim *holds* when CAT beats the rival on every metric named beyond the seed
    spread (:func:`compare`), *partly* when on some, and *does not hold* when on none
    (:func:`hmcam.experiments.verdicts.verdict`); differences are in points of accuracy. The
    clean-accuracy claim holds when CAT loses at most the paper's 3.4 points, and the Fig. 5 claim
    when CAT's per-epoch robust accuracy falls less in total than YOPO's (:func:`oscillation`).
    Claims about arms the study does not have are left out.
    """
    from hmcam.experiments.verdicts import verdict

    arms = summary["arms"]
    found: list[dict[str, str]] = []
    if "CAT" not in arms:
        return found
    for rival in (reference, "Free", "YOPO"):
        if rival not in arms:
            continue
        paper = PAPER_DIFFERENCES.get(rival, PAPER_DIFFERENCES["PGD-AT"])
        metrics = ("pgd", "mpgd", "cwlinf", "worst")
        shown = ", ".join(f"{value:+.1f} {metric}" for metric, value in paper.items() if metric != "clean")
        minutes = arms["CAT"]["train_minutes"]["mean"] / max(arms[rival]["train_minutes"]["mean"], 1e-12)
        paper_minutes = PAPER_MINUTES["CAT"] / PAPER_MINUTES.get(rival, PAPER_MINUTES["PGD-AT"])
        outcomes = [_outcome(summary["differences"][f"CAT - {rival}"][metric]) for metric in metrics]
        found.append(
            {
                "claim": f"CAT is more robust than {rival} (Table 4)",
                "paper": f"{shown} points, at {paper_minutes:.2f}x the time",
                "ours": ", ".join(_differences(summary, "CAT", rival, metrics))
                + f" points, at {minutes:.2f}x the training minutes and equal gradient passes",
                "verdict": verdict(outcomes),
            }
        )
    if reference in arms:
        clean = summary["differences"][f"CAT - {reference}"]["clean"]["difference"]
        found.append(
            {
                "claim": f"CAT keeps clean accuracy close to {reference} (Table 4)",
                "paper": f"{PAPER_DIFFERENCES['PGD-AT']['clean']:+.1f} points",
                "ours": f"{100 * clean:+.1f} points",
                "verdict": "holds" if clean >= -CLEAN_TOLERANCE else "does not hold",
            }
        )
    if "CAT-CE" in arms:
        found.append(
            {
                "claim": "J_cd drives the chains better than cross-entropy (Eq. 15)",
                "paper": "not measured",
                "ours": ", ".join(_differences(summary, "CAT", "CAT-CE", ("pgd", "worst"))) + " points",
                "verdict": verdict(
                    [_outcome(summary["differences"]["CAT - CAT-CE"][metric]) for metric in ("pgd", "worst")]
                ),
            }
        )
    drops = summary.get("oscillation", {})
    if "YOPO" in drops:
        found.append(
            {
                "claim": "CAT's robust accuracy rises steadily while YOPO's oscillates (Fig. 5)",
                "paper": "a figure, no number",
                "ours": "total per-epoch drop of robust accuracy: "
                + ", ".join(f"{label} {_percent(value)}" for label, value in drops.items())
                + " points",
                "verdict": "holds" if drops["CAT"] < drops["YOPO"] else "does not hold",
            }
        )
    return found


def oscillation(curve: Sequence[dict[str, Any]]) -> float:
    """Total drop of per-epoch robust accuracy (sum of decreases): 0 for a curve that never falls (Fig. 5)."""
    values: list[float] = [point["robust"] for point in curve if point["robust"] is not None]
    return sum(max(0.0, a - b) for a, b in zip(values, values[1:], strict=False))


def write_report(
    out: Path, scale: Scale, results: Sequence[dict[str, Any]], summary: dict[str, Any], run: dict[str, Any]
) -> str:
    """Write ``results.csv``, ``summary.csv``, ``results.json``, the curves and the reports; returns ``report.md``.

    ``run`` is the :func:`~hmcam.reporting.provenance.run_record` stored in ``results.json``.
    """
    from hmcam.experiments.setup import claim_table
    from hmcam.reporting.figures import save_training_curves
    from hmcam.reporting.page import write_run_page
    from hmcam.reporting.tables import markdown_table, write_csv

    run_columns = ["study", "arm", "seed", "epochs", *METRICS, "robust_examples"]
    write_csv(out / "results.csv", results, run_columns)
    table_rows = []
    lines = [f"# Adversarial training at equal cost: scale `{scale.name}`", "", scale.description, ""]
    for study in scale.studies:
        study_summary = summary[study.name]
        rows = []
        for label, metrics in study_summary["arms"].items():
            row: dict[str, Any] = {"study": study.name, "arm": label}
            for metric, values in metrics.items():
                row[f"{metric}_mean"], row[f"{metric}_std"] = values["mean"], values["std"]
            shown = {
                "arm": label,
                **{
                    metric: f"{_percent(values['mean'])} ± {_percent(values['std'])}"
                    for metric, values in metrics.items()
                    if metric not in ("train_minutes", "passes")
                },
                "train minutes": f"{metrics['train_minutes']['mean']:.3g} ± {metrics['train_minutes']['std']:.2g}",
                "passes": f"{metrics['passes']['mean']:.1f}",
            }
            rows.append(shown)
            table_rows.append(row)
        curves: dict[str, list[list[dict[str, Any]]]] = {
            label: [r["curve"] for r in results if r["study"] == study.name and r["arm"] == label]
            for label in study_summary["arms"]
        }
        save_training_curves(out / f"{study.name}-curves.png", curves, title=f"{study.name}, eps {study.eps:.4g}")
        study_summary["oscillation"] = {
            label: statistics.fmean(oscillation(curve) for curve in runs) for label, runs in curves.items()
        }
        attacks = f"{study.attack_steps} steps" + (f", step {study.attack_alpha:.4g}" if study.attack_alpha else "")
        lines += [
            f"## {study.name}",
            "",
            f"{study.dataset}, {study.model}, L-inf eps {study.eps:.4g}; "
            + (f"budget {study.budget:g} gradient passes per example; " if study.budget else "the paper's epochs; ")
            + f"seeds {list(scale.seeds)}. Accuracies in percent (mean ± standard deviation over seeds): clean on "
            + ("the whole test set" if study.test_limit is None else f"the first {study.test_limit} test images")
            + f", attacks ({attacks}) and their per-example worst case on the first {study.robust_examples}.",
            "",
            markdown_table(rows, ["arm", "clean", "pgd", "mpgd", "cwlinf", "worst", "train minutes", "passes"]),
            f"![curves]({study.name}-curves.png)",
            "",
            "### The paper's claims, as this run measures them",
            "",
        ]
        study_claims = claims(study_summary, study.reference)
        study_summary["claims"] = study_claims
        lines += [
            claim_table(study_claims) if study_claims else "No claim of the paper concerns these arms.",
            "",
            "Differences whose seed ranges do not overlap (every seed of one arm beats every seed of the other):",
            "",
        ]
        separated = [
            f"- {pair}: {metric} {100 * c['difference']:+.1f} points"
            for pair, metrics in study_summary["differences"].items()
            for metric, c in metrics.items()
            if c["exceeds_spread"] and c["difference"] > 0 and metric not in ("train_minutes", "passes")
        ]
        lines += separated or ["- none"]
        lines.append("")
    write_csv(
        out / "summary.csv", table_rows, ["study", "arm", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))]
    )
    claims_found = [
        {**claim, "claim": claim["claim"] + (f" [{name}]" if len(summary) > 1 else "")}
        for name, part in summary.items()
        for claim in part["claims"]
    ]
    atomic_write_json(
        out / "results.json",
        {"experiment": "at-efficiency", "scale": scale.name, "studies": summary, "claims": claims_found, "run": run},
    )
    report = "\n".join(lines)
    atomic_write(out / "report.md", report.encode())
    write_run_page(out)
    return report


def plan(scale: Scale) -> dict[str, Any]:
    """The scale as JSON, with each arm's epochs resolved: what ``config.json`` records."""
    return {
        "kind": "experiment",
        "experiment": "at-efficiency",
        "scale": scale.name,
        "description": scale.description,
        "seeds": list(scale.seeds),
        "studies": [
            {
                **{k: v for k, v in dataclasses.asdict(study).items() if k != "arms"},
                "arms": [{**dataclasses.asdict(arm), "epochs": arm_epochs(study, arm)} for arm in study.arms],
            }
            for study in scale.studies
        ],
    }


def run_efficiency(
    scale: Scale,
    out: str | Path,
    *,
    device: str = "cpu",
    data_root: str | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every study, arm and seed of ``scale`` into ``out`` (resuming what is there) and write the report.

    Returns ``{"out", "plan", "summary", "report"}``. ``callback(result)`` is called after each run.
    A ``config.json`` left by another scale or other settings in ``out`` is an error: results of two
    plans are never mixed.
    """
    from hmcam.experiments.setup import start_run_folder
    from hmcam.reporting.provenance import run_record

    started = time.time()
    folder = Path(out)
    planned = plan(scale)
    start_run_folder(folder, planned, "a run of another plan")
    jobs = [(study, arm, seed) for study in scale.studies for arm in study.arms for seed in scale.seeds]
    results = []
    for study, arm, seed in tqdm(jobs, desc=f"at-efficiency {scale.name}", unit="run", disable=not progress):
        result = run_one(folder, study, arm, seed, device=device, data_root=data_root, progress=progress)
        results.append(result)
        if callback is not None:
            callback(result)
    summary = summarize(results, scale)
    report = write_report(folder, scale, results, summary, run_record("experiment", started, device))
    return {"out": str(folder), "plan": planned, "summary": summary, "report": report}
