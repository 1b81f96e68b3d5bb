"""Training speed: seconds per epoch of natural and PGD-K adversarial training, printed as JSON.

Trains smallcnn on a Fashion-MNIST subset with ``hmcam.training.train``, natural and PGD-K, with
convolutions in channels-last (NHWC) and in contiguous (NCHW) order, all in one process. The four
variants are run one epoch at a time in interleaved rounds; the first round warms up kernels and
allocators and is discarded, and each variant's time is the minimum over the other rounds, the
estimate least disturbed by other processes sharing the CPU (medians are reported too). The report
gives the PGD-K / natural ratio and its floor K + 1: a PGD-K step costs K input gradients plus the
training step itself (an input gradient skips the weight gradients, so the ratio can even fall
slightly below the floor). Evaluation is switched off so that only training is timed.

Usage: ``python benchmarks/training.py [--train-examples 1024] [--steps 10] [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from hmcam.training import TrainConfig, train

DATASET = "fashion-mnist"
MODEL = "smallcnn"
BATCH_SIZE = 128
EPS = 0.1


def epoch_seconds(method: str, method_kwargs: dict, channels_last: bool, train_examples: int, folder: Path) -> float:
    """Training seconds of a one-epoch run (a fresh model; data loading and evaluation not timed)."""
    config = TrainConfig(
        dataset=DATASET,
        model=MODEL,
        method=method,
        method_kwargs=method_kwargs,
        epochs=1,
        batch_size=BATCH_SIZE,
        lr=0.05,
        train_limit=train_examples,
        test_limit=BATCH_SIZE,
        eval_subset=0,
        seed=0,
        channels_last=channels_last,
        progress=False,
        device="cpu",
        out=str(folder),
    )
    summary = train(config)
    return summary["final"]["train_seconds"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON report."""
    parser = argparse.ArgumentParser(description="Seconds per epoch of natural and PGD-K training.")
    parser.add_argument("--train-examples", type=int, default=1024, help="size of the training subset")
    parser.add_argument("--steps", type=int, default=10, help="K, the PGD steps per training step")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; the first is a warm-up")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the first round is a warm-up")
    pgd_kwargs = {"eps": EPS, "alpha": 2.5 * EPS / args.steps, "steps": args.steps}
    variants = [
        (method, kwargs, layout)
        for layout in ("channels_last", "contiguous")
        for method, kwargs in (("natural", {}), ("pgd", pgd_kwargs))
    ]
    times: dict[tuple[str, str], list[float]] = {(method, layout): [] for method, _, layout in variants}
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(args.rounds):
            for method, kwargs, layout in variants:
                run = Path(folder) / f"{method}-{layout}-{round_index}"
                seconds = epoch_seconds(method, kwargs, layout == "channels_last", args.train_examples, run)
                if round_index > 0:
                    times[(method, layout)].append(seconds)
    layouts = {}
    for layout in ("channels_last", "contiguous"):
        natural, pgd = min(times[("natural", layout)]), min(times[("pgd", layout)])
        layouts[layout] = {
            "natural_seconds_per_epoch": round(natural, 3),
            "pgd_seconds_per_epoch": round(pgd, 3),
            "pgd_over_natural": round(pgd / natural, 2),
            "median_seconds": {
                method: round(statistics.median(times[(method, layout)]), 3) for method in ("natural", "pgd")
            },
        }
    report = {
        "benchmark": "training seconds per epoch (minimum over rounds)",
        "dataset": DATASET,
        "model": MODEL,
        "train_examples": args.train_examples,
        "batch_size": BATCH_SIZE,
        "steps_per_epoch": args.train_examples // BATCH_SIZE,
        "pgd": pgd_kwargs,
        "pgd_over_natural_floor": args.steps + 1,
        "timed_rounds": args.rounds - 1,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "layouts": layouts,
        "channels_last_speedup": {
            method: round(
                layouts["contiguous"][f"{method}_seconds_per_epoch"]
                / layouts["channels_last"][f"{method}_seconds_per_epoch"],
                2,
            )
            for method in ("natural", "pgd")
        },
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
