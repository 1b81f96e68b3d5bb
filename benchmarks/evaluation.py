"""Robust-evaluation speed and faithfulness: hmcam's AutoAttack and paper suites against torchattacks, as JSON.

For a naturally and an adversarially (PGD) trained smallcnn on Fashion-MNIST, in one process, on the
same model and the same test images:

- ``hmcam_autoattack``: :func:`hmcam.evaluation.evaluate_robustness` with ``suite="autoattack"``
  (APGD-CE, APGD-T, FAB-T, Square as the reference's ``version="standard"``; early exit and
  compaction inside the attacks, each attack on the examples still robust), masking checks off;
- ``torchattacks_autoattack``: torchattacks 3.5.1 configured like the reference (its ``AutoAttack``
  class keeps 10 iterations): ``MultiAttack`` of ``APGD(loss="ce", steps=100, n_restarts=1)``,
  ``APGDT(steps=100, n_classes=10)``, ``FAB(multi_targeted=True, steps=100, n_classes=10)`` and
  ``Square(n_queries=5000, resc_schedule=False)``, batch by batch;
- ``hmcam_paper``: the ``paper`` suite's worst case over PGD-20, M-PGD-20 and CW-L-inf-20, against
  ``torchattacks_pgd``, torchattacks' PGD-20 alone on every example.

Targets (issue 18): ``hmcam_autoattack`` in at most 0.6x the time of ``torchattacks_autoattack`` on
both models with robust accuracy within 0.5 points of it. ``autoattack_seconds_by_attack`` sets each
attack's seconds beside torchattacks' own, which shows where the time goes: on the examples that stay
robust both implementations run every step of every attack. ``hmcam_paper`` against
``torchattacks_pgd`` is context, not a target: the paper suite runs three attacks (PGD, M-PGD, CW),
torchattacks' PGD one. Variants run in interleaved rounds; each time is the minimum over
rounds (other processes share the CPU). The checkpoints are trained on first use with
:func:`hmcam.training.train` (a Fashion-MNIST subset, a few epochs) and cached in ``--cache``. All
variants see the model in channels-last memory order, as ``hmcam eval`` runs it on CPUs; on CUDA
every timing is synchronised.

Usage: ``python benchmarks/evaluation.py [--examples 200] [--rounds 1] [--eps 0.1] [--methods natural,pgd]
[--suites autoattack,paper] [--threads N] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hmcam.data import ImageDataset, load_dataset
from hmcam.evaluation import evaluate_robustness, predict
from hmcam.models import load_checkpoint
from hmcam.training import TrainConfig, train

DATASET = "fashion-mnist"
MODEL = "smallcnn"
STEPS = 20
BATCH_SIZE = 128


def checkpoint(cache: Path, method: str, eps: float, train_examples: int) -> Path:
    """The cached checkpoint of ``method`` training (trained now if it is not there yet)."""
    out = cache / method
    path = out / "last.safetensors"
    if path.is_file():
        return path
    method_kwargs: dict[str, Any] = {} if method == "natural" else {"eps": eps, "alpha": 2.5 * eps / 7, "steps": 7}
    train(
        TrainConfig(
            dataset=DATASET,
            model=MODEL,
            model_options={"dropout": 0.0},
            method=method,
            method_kwargs=method_kwargs,
            epochs=4,
            batch_size=BATCH_SIZE,
            lr=0.05,
            schedule="cosine",
            train_limit=train_examples,
            test_limit=256,
            eval_subset=0,
            seed=0,
            progress=False,
            device="cpu",
            out=str(out),
        )
    )
    return path


def timed(device: torch.device, run: Callable[[], float]) -> tuple[float, float]:
    """``run()``'s result and its wall seconds (CUDA synchronised before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return value, time.perf_counter() - start


def batched_accuracy(model: nn.Module, attack: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> float:
    """Robust accuracy of ``attack``'s examples, attacked ``BATCH_SIZE`` at a time."""
    correct = 0
    for start in range(0, len(x), BATCH_SIZE):
        adversarial = attack(x[start : start + BATCH_SIZE], y[start : start + BATCH_SIZE])
        correct += int((predict(model, adversarial) == y[start : start + BATCH_SIZE]).sum())
    return correct / len(x)


def timed_cascade(
    model: nn.Module, attacks: dict[str, Callable[[Tensor, Tensor], Tensor]], seconds: dict[str, float]
) -> Callable[[Tensor, Tensor], Tensor]:
    """Run torchattacks' ``MultiAttack`` (each attack on the examples no earlier one fooled), timing each attack.

    The seconds of every attack are added to ``seconds`` under its name, so that the report can set
    each of hmcam's attacks beside torchattacks' own.
    """

    def run(x: Tensor, y: Tensor) -> Tensor:
        result, robust = x.clone(), torch.arange(len(x), device=x.device)
        for name, attack in attacks.items():
            if robust.numel() == 0:
                break
            start = time.perf_counter()
            adversarial = attack(x[robust], y[robust])
            fooled = predict(model, adversarial) != y[robust]
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            result[robust[fooled]] = adversarial[fooled]
            robust = robust[~fooled]
        return result

    return run


def torchattacks_variants(
    model: nn.Module, eps: float, x: Tensor, y: Tensor, seconds: dict[str, float]
) -> dict[str, Callable[[], float]]:
    """The reference-configured AutoAttack and PGD-20 of torchattacks (empty when torchattacks is missing).

    The AutoAttack's per-attack seconds of the last run are written to ``seconds``.
    """
    try:
        import torchattacks
    except ImportError:
        return {}
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    attacks = {
        "apgd-ce": torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
        "apgd-t": torchattacks.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=classes, seed=0),
        "fab-t": torchattacks.FAB(
            model, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=classes, seed=0
        ),
        "square": torchattacks.Square(
            model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, resc_schedule=False, seed=0
        ),
    }
    autoattack = timed_cascade(model, attacks, seconds)
    pgd = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / STEPS, steps=STEPS, random_start=True)

    def run_autoattack() -> float:
        seconds.clear()
        return batched_accuracy(model, autoattack, x, y)

    return {
        "torchattacks_autoattack": run_autoattack,
        "torchattacks_pgd": lambda: batched_accuracy(model, pgd, x, y),
    }


def measure(
    path: Path, test: ImageDataset, eps: float, rounds: int, suites: list[str], device: torch.device
) -> dict[str, Any]:
    """Time the variants on one checkpoint in interleaved rounds; minimum seconds and robust accuracies."""
    model, _ = load_checkpoint(path, device=device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x, y = test.images.to(device), test.labels.to(device)
    details: dict[str, Any] = {}

    def ours(suite: str) -> Callable[[], float]:
        def run() -> float:
            result = evaluate_robustness(
                model, x, y, suite=suite, eps=eps, batch_size=BATCH_SIZE, check_examples=0, progress=False,
                **({"steps": STEPS} if suite == "paper" else {}),
            )  # fmt: skip
            details[suite] = {
                "clean_accuracy": result.clean_accuracy,
                "gradient_evaluations": result.to_dict()["gradient_evaluations"],
                "attacks": [
                    {
                        key: report.to_dict()[key]
                        for key in ("name", "reached", "fooled", "gradient_evaluations", "seconds")
                    }
                    for report in result.attacks
                ],
                "warnings": list(result.warnings),
            }
            return result.robust_accuracy

        return run

    their_seconds: dict[str, float] = {}
    theirs = torchattacks_variants(model, eps, x, y, their_seconds)
    variants: dict[str, Callable[[], float]] = {}
    if "autoattack" in suites:
        variants["hmcam_autoattack"] = ours("autoattack")
        if "torchattacks_autoattack" in theirs:
            variants["torchattacks_autoattack"] = theirs["torchattacks_autoattack"]
    if "paper" in suites:
        variants["hmcam_paper"] = ours("paper")
        if "torchattacks_pgd" in theirs:
            variants["torchattacks_pgd"] = theirs["torchattacks_pgd"]
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    accuracy: dict[str, float] = {}
    torch.manual_seed(0)
    for _ in range(rounds):
        for name, run in variants.items():
            accuracy[name], spent = timed(device, run)
            seconds[name].append(spent)
    best = {name: min(times) for name, times in seconds.items()}
    report: dict[str, Any] = {
        "checkpoint": str(path),
        "robust_accuracy": {name: round(value, 4) for name, value in accuracy.items()},
        "seconds": {name: round(value, 3) for name, value in best.items()},
        "seconds_per_round": {name: [round(value, 2) for value in times] for name, times in seconds.items()},
        **{f"hmcam_{suite}_details": details[suite] for suite in suites if suite in details},
    }
    if their_seconds and "autoattack" in details:
        ours_by_attack = {attack["name"]: attack["seconds"] for attack in details["autoattack"]["attacks"]}
        report["autoattack_seconds_by_attack"] = {
            name: {
                "hmcam": round(ours_by_attack.get(name, 0.0), 2),
                "torchattacks": round(spent, 2),
                "ratio": round(ours_by_attack.get(name, 0.0) / spent, 2),
            }
            for name, spent in their_seconds.items()
        }
    for mine, reference in (("hmcam_autoattack", "torchattacks_autoattack"), ("hmcam_paper", "torchattacks_pgd")):
        if mine in best and reference in best:
            report[f"{mine}_over_{reference}"] = round(best[mine] / best[reference], 2)
    if "hmcam_autoattack" in accuracy and "torchattacks_autoattack" in accuracy:
        report["autoattack_difference_points"] = round(
            100 * (accuracy["hmcam_autoattack"] - accuracy["torchattacks_autoattack"]), 2
        )
    if not theirs:
        report["torchattacks"] = "not installed: pip install --no-deps torchattacks (needs scipy)"
    return report


def main(argv: list[str] | None = None) -> int:
    """Train or load the two checkpoints, time the variants on each and print the JSON report."""
    parser = argparse.ArgumentParser(description="Speed and faithfulness of hmcam's robust evaluation suites.")
    parser.add_argument("--examples", type=int, default=200, help="test images evaluated (default 200)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds; the minimum is kept")
    parser.add_argument("--suites", default="autoattack,paper", help="suites to measure (autoattack and/or paper)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf radius for training and evaluation")
    parser.add_argument("--train-examples", type=int, default=10000, help="training subset of the checkpoints")
    parser.add_argument("--cache", default="runs/bench-evaluation", help="folder of the cached checkpoints")
    parser.add_argument("--methods", default="natural,pgd", help="checkpoints to measure (default natural,pgd)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a shared CPU")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    suites = [suite.strip() for suite in args.suites.split(",")]
    if not suites or not set(suites) <= {"autoattack", "paper"}:
        parser.error(f"--suites takes autoattack and/or paper, got {args.suites!r}")
    device = torch.device(args.device)
    methods = [method.strip() for method in args.methods.split(",")]
    if not methods or not set(methods) <= {"natural", "pgd"}:
        parser.error(f"--methods takes natural and/or pgd, got {args.methods!r}")
    loaded = load_dataset(DATASET, split="test", limit=args.examples)
    assert isinstance(loaded, ImageDataset)
    cache = Path(args.cache)
    models = {}
    for method in methods:
        path = checkpoint(cache / f"eps{args.eps:g}-n{args.train_examples}", method, args.eps, args.train_examples)
        models[method] = measure(path, loaded, args.eps, args.rounds, suites, device)
    report = {
        "benchmark": "robust evaluation suites against torchattacks (seconds: minimum over rounds)",
        "dataset": DATASET,
        "model": MODEL,
        "examples": args.examples,
        "eps": args.eps,
        "batch_size": BATCH_SIZE,
        "targets": {
            "hmcam_autoattack_over_torchattacks_autoattack (both models)": 0.6,
            "|autoattack_difference_points| (both models)": 0.5,
        },
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    for method, key in (("natural", "natural"), ("pgd", "adversarial")):
        if method in models:
            report[key] = models[method]
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
