"""Robust-evaluation speed: the worst case over PGD-20, M-PGD-20 and CW-L-inf-20, printed as JSON.

For a naturally and an adversarially (PGD) trained smallcnn on Fashion-MNIST, in one process, on the
same model and the same test images, three ways of getting the per-example worst case are timed:

- ``cascade``: :func:`hmcam.evaluation.evaluate_robustness` (cheapest first, each attack only on
  the examples still robust, early exit inside the attacks), with the masking checks off, and
  once more with its default checks, to measure their cost;
- ``every_example``: the same three attacks, each run on every example (``attack(x, y)`` batch by
  batch), and the worst case taken afterwards;
- ``torchattacks_pgd``: torchattacks' PGD-20 alone on every example (when torchattacks is importable).

The target: the cascade takes no longer than torchattacks' PGD-20 alone on the adversarially
trained model (``cascade_over_torchattacks_pgd <= 1``). Variants are run in interleaved rounds and
each time is the minimum over rounds (other processes share the CPU). The two checkpoints are
trained on first use with :func:`hmcam.training.train` (a Fashion-MNIST subset, a few epochs) and
cached in ``--cache`` (default ``runs/bench-evaluation``), so later runs take a minute or two.
All variants see the model in channels-last memory order, as ``hmcam eval`` runs it on CPUs.

On a CPU shared with other processes, two threads that wait for each other at every small operation
make the timings erratic; ``--threads 1`` gives steadier ratios.

Usage: ``python benchmarks/evaluation.py [--examples 500] [--rounds 2] [--eps 0.1] [--methods natural,pgd]
[--threads N]``.
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

from hmcam.attacks import MPGD, PGD, Attack, CWLinf
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


def every_example(model: nn.Module, attacks: list[Attack], x: Tensor, y: Tensor) -> float:
    """Robust accuracy of the worst case over ``attacks``, each run on every example, batch by batch."""
    robust = predict(model, x) == y
    for attack in attacks:
        for start in range(0, len(x), BATCH_SIZE):
            batch = slice(start, start + BATCH_SIZE)
            adversarial = attack(x[batch], y[batch])
            robust[batch] &= predict(model, adversarial) == y[batch]
    return float(robust.float().mean())


def torchattacks_pgd(model: nn.Module, eps: float, x: Tensor, y: Tensor) -> Callable[[], float] | None:
    """The torchattacks PGD-20 on every example (robust accuracy), or None when torchattacks is missing."""
    try:
        import torchattacks
    except ImportError:
        return None
    attack = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / STEPS, steps=STEPS, random_start=True)

    def run() -> float:
        correct = 0
        for start in range(0, len(x), BATCH_SIZE):
            adversarial = attack(x[start : start + BATCH_SIZE], y[start : start + BATCH_SIZE])
            correct += int((predict(model, adversarial) == y[start : start + BATCH_SIZE]).sum())
        return correct / len(x)

    return run


def measure(path: Path, test: ImageDataset, eps: float, rounds: int) -> dict[str, Any]:
    """Time the variants on one checkpoint in interleaved rounds; minimum seconds and robust accuracies."""
    model, _ = load_checkpoint(path)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x, y = test.images, test.labels
    three = ["pgd", "mpgd", "cwlinf"]
    details: dict[str, Any] = {}

    def cascade(check_examples: int) -> Callable[[], float]:
        def run() -> float:
            result = evaluate_robustness(
                model, x, y, three, eps=eps, steps=STEPS, batch_size=BATCH_SIZE, check_examples=check_examples,
                progress=False,
            )  # fmt: skip
            details[f"cascade_checks_{check_examples}"] = {
                "clean_accuracy": result.clean_accuracy,
                "gradient_evaluations": result.to_dict()["gradient_evaluations"],
                "attacks": [
                    {key: report.to_dict()[key] for key in ("name", "reached", "fooled", "gradient_evaluations")}
                    for report in result.attacks
                ],
                "warnings": list(result.warnings),
            }
            return result.robust_accuracy

        return run

    plain = [
        PGD(model, eps, steps=STEPS, seed=0),
        MPGD(model, eps, steps=STEPS, seed=0),
        CWLinf(model, eps, steps=STEPS, seed=0),
    ]
    variants: dict[str, Callable[[], float]] = {
        "cascade": cascade(0),
        "cascade_with_checks": cascade(len(x)),
        "every_example": lambda: every_example(model, plain, x, y),
    }
    theirs = torchattacks_pgd(model, eps, x, y)
    if theirs is not None:
        variants["torchattacks_pgd"] = theirs
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    accuracy: dict[str, float] = {}
    torch.manual_seed(0)
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            accuracy[name] = run()
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(times) for name, times in seconds.items()}
    report: dict[str, Any] = {
        "checkpoint": str(path),
        "clean_accuracy": details["cascade_checks_0"]["clean_accuracy"],
        "robust_accuracy": {name: round(value, 4) for name, value in accuracy.items()},
        "seconds": {name: round(value, 3) for name, value in best.items()},
        "seconds_per_round": {name: [round(value, 2) for value in times] for name, times in seconds.items()},
        "every_example_over_cascade": round(best["every_example"] / best["cascade"], 2),
        # Input gradients computed: independent of the machine and its load, unlike seconds.
        "gradient_evaluations": {
            "cascade": details["cascade_checks_0"]["gradient_evaluations"],
            "every_example": len(three) * STEPS * len(x),
            "torchattacks_pgd": STEPS * len(x),
            "cascade_over_torchattacks_pgd": round(
                details["cascade_checks_0"]["gradient_evaluations"] / (STEPS * len(x)), 2
            ),
        },
        "checks_overhead": round(best["cascade_with_checks"] / best["cascade"], 2),
        "cascade": details["cascade_checks_0"],
        "checks": {"examples": len(x), "warnings": details[f"cascade_checks_{len(x)}"]["warnings"]},
    }
    if "torchattacks_pgd" in best:
        report["cascade_over_torchattacks_pgd"] = round(best["cascade"] / best["torchattacks_pgd"], 2)
        report["every_example_over_torchattacks_pgd"] = round(best["every_example"] / best["torchattacks_pgd"], 2)
    else:
        report["torchattacks"] = "not installed: pip install --no-deps torchattacks (needs scipy)"
    return report


def main(argv: list[str] | None = None) -> int:
    """Train or load the two checkpoints, time the variants on each and print the JSON report."""
    parser = argparse.ArgumentParser(description="Speed of the worst-case robust evaluation over three attacks.")
    parser.add_argument("--examples", type=int, default=500, help="test images evaluated (default 500)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds; the minimum is kept")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf radius for training and evaluation")
    parser.add_argument("--train-examples", type=int, default=10000, help="training subset of the checkpoints")
    parser.add_argument("--cache", default="runs/bench-evaluation", help="folder of the cached checkpoints")
    parser.add_argument("--methods", default="natural,pgd", help="checkpoints to measure (default natural,pgd)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a shared CPU")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    methods = [method.strip() for method in args.methods.split(",")]
    if not methods or not set(methods) <= {"natural", "pgd"}:
        parser.error(f"--methods takes natural and/or pgd, got {args.methods!r}")
    loaded = load_dataset(DATASET, split="test", limit=args.examples)
    assert isinstance(loaded, ImageDataset)
    cache = Path(args.cache)
    models = {}
    for method in methods:
        path = checkpoint(cache / f"eps{args.eps:g}-n{args.train_examples}", method, args.eps, args.train_examples)
        models[method] = measure(path, loaded, args.eps, args.rounds)
    report = {
        "benchmark": "worst case over PGD-20, M-PGD-20 and CW-L-inf-20 (seconds: minimum over rounds)",
        "dataset": DATASET,
        "model": MODEL,
        "examples": args.examples,
        "eps": args.eps,
        "batch_size": BATCH_SIZE,
        "targets": {"cascade_over_torchattacks_pgd (adversarially trained)": 1.0},
        "device": "cpu",
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
