"""Training speed: seconds per epoch of every training method against natural training and its floor, as JSON.

Trains smallcnn on a Fashion-MNIST subset with ``hmcam.training.train``, all in one process: natural
and PGD-K training with convolutions in channels-last (NHWC) and in contiguous (NCHW) order, and
every adversarial method of the comparison (Free-m, YOPO-m-n, fast AT, TRADES-K, CAT and CAT-CE) in
channels-last order. The variants are run one epoch at a time in interleaved
rounds; the first round warms up kernels and allocators and is discarded, and each variant's time
is the minimum over the other rounds, the estimate least disturbed by other processes sharing the
CPU (medians are reported too). Evaluation is switched off so that only training is timed.

For each method the report gives its time over natural training's and its *floor*: the forward and
backward passes per minibatch it reports (``passes`` in its metrics; natural 1, PGD-K K + 1, Free-m
m, YOPO-m-n m (1 + s) with s the first layer's share of the network's multiply-adds, fast AT 2,
TRADES-K K + 7/3, CAT T (K + 1) + T / 3). The target is each method within 1.10x of its floor
(``over_floor <= 1.10``). An input-gradient pass skips the weight gradients, so a method whose
passes are mostly attack steps (PGD, TRADES) can even fall below its floor.

Usage: ``python benchmarks/training.py [--train-examples 1024] [--steps 10] [--rounds 4] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from hmcam.training import TrainConfig, train

DATASET = "fashion-mnist"
MODEL = "smallcnn"
BATCH_SIZE = 128
EPS = 0.1
#: The target ratio of a method's time to natural training's over its floor in passes.
TARGET_OVER_FLOOR = 1.10


def epoch_run(method: str, method_kwargs: dict, channels_last: bool, train_examples: int, folder: Path) -> dict:
    """The final metrics of a one-epoch run (a fresh model; data loading and evaluation not timed)."""
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
    final: dict[str, Any] = summary["final"]
    return final


def method_settings(steps: int) -> dict[str, dict[str, Any]]:
    """Each method's arguments: K = ``steps`` for PGD and TRADES, the MNIST-like defaults otherwise, eps 0.1."""
    attack = {"eps": EPS, "alpha": 2.5 * EPS / steps, "steps": steps}
    settings: dict[str, dict[str, Any]] = {
        "natural": {},
        "pgd": attack,
        "free": {"eps": EPS},  # Free-10
        "yopo": {"eps": EPS},  # YOPO-5-10
        "fast": {"eps": EPS},
        "trades": attack,
    }
    # CAT and its cross-entropy control are timed with their defaults, T = 4 and K = 1.
    settings.update({name: {"eps": EPS} for name in ("cat", "cat-ce")})
    return settings


def chain_memory(examples: int, shape: tuple[int, ...]) -> dict[str, float]:
    """Bytes of CAT's per-example state on a dataset: the chain (theta - x) and momentum v in float32."""
    per_tensor = examples * torch.Size(shape).numel() * 4
    return {
        "examples": examples,
        "per_tensor_mb": round(per_tensor / 1e6, 1),
        "total_mb": round(2 * per_tensor / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON report."""
    parser = argparse.ArgumentParser(description="Seconds per epoch of every training method.")
    parser.add_argument("--train-examples", type=int, default=1024, help="size of the training subset")
    parser.add_argument("--steps", type=int, default=10, help="K, the attack steps of PGD-K and TRADES-K")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; the first is a warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the first round is a warm-up")
    if args.threads is not None:
        # One thread per process is the steadier measurement on a machine that others share.
        torch.set_num_threads(args.threads)
    settings = method_settings(args.steps)
    variants = [(method, "channels_last") for method in settings] + [
        (method, "contiguous") for method in ("natural", "pgd")
    ]
    times: dict[tuple[str, str], list[float]] = {variant: [] for variant in variants}
    passes: dict[str, float] = {}
    batches = args.train_examples // BATCH_SIZE
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(args.rounds):
            for method, layout in variants:
                run = Path(folder) / f"{method}-{layout}-{round_index}"
                final = epoch_run(method, settings[method], layout == "channels_last", args.train_examples, run)
                passes[method] = final["passes"] / batches
                if round_index > 0:
                    times[(method, layout)].append(final["train_seconds"])
    best = {variant: min(seconds) for variant, seconds in times.items()}
    natural = best[("natural", "channels_last")]
    methods = {}
    for method, kwargs in settings.items():
        seconds = best[(method, "channels_last")]
        over_natural = seconds / natural
        methods[method] = {
            "settings": kwargs,
            "seconds_per_epoch": round(seconds, 3),
            "median_seconds": round(statistics.median(times[(method, "channels_last")]), 3),
            "over_natural": round(over_natural, 2),
            "floor_passes": round(passes[method], 3),
            "over_floor": round(over_natural / passes[method], 2),
            "within_target": over_natural / passes[method] <= TARGET_OVER_FLOOR,
        }
    layouts = {
        layout: {
            method: {
                "seconds_per_epoch": round(best[(method, layout)], 3),
                "median_seconds": round(statistics.median(times[(method, layout)]), 3),
            }
            for method in ("natural", "pgd")
        }
        for layout in ("channels_last", "contiguous")
    }
    report = {
        "benchmark": "training seconds per epoch (minimum over rounds)",
        "dataset": DATASET,
        "model": MODEL,
        "train_examples": args.train_examples,
        "batch_size": BATCH_SIZE,
        "steps_per_epoch": batches,
        "timed_rounds": args.rounds - 1,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "target_over_floor": TARGET_OVER_FLOOR,
        "methods": methods,
        "layouts": layouts,
        "cat_chain_memory": {
            "cifar10": chain_memory(50_000, (3, 32, 32)),
            "fashion-mnist": chain_memory(60_000, (1, 28, 28)),
        },
        "channels_last_speedup": {
            method: round(best[(method, "contiguous")] / best[(method, "channels_last")], 2)
            for method in ("natural", "pgd")
        },
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
