"""``hmcam eval CHECKPOINT``: clean accuracy, robust accuracy per attack and the per-example worst case.

The attacks are ``--suite`` (default ``autoattack``, the reference's standard AutoAttack) or a list
given with ``--attacks``. A thin layer over :func:`hmcam.evaluation.evaluate_robustness`: it checks
the options before any work, loads the checkpoint (and the ``--source`` checkpoint for the transfer check) and the first
``--limit`` examples of the evaluation split, takes eps from the checkpoint's training metadata
unless ``--eps`` is given, shards the examples over the processes under ``torchrun``, keeps the
resumable state in ``--out/state`` and writes the run folder into ``--out`` (``config.json``,
``results.json``, ``results.csv`` per attack, ``examples.csv``, ``robustness.png``, ``report.md``,
``report.html``). Warnings about gradient masking go to stderr and into the JSON.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hmcam.cli.common import (
    add_data_options,
    add_device_option,
    add_model_options,
    check_output_folder,
    checkpoint_and_data,
)

# The names of hmcam.evaluation.SUITES, spelled out so that `hmcam --help` needs no torch import.
SUITE_NAMES = ("autoattack", "autoattack-plus", "autoattack-rand", "paper", "fast")
DEFAULT_SUITE = "autoattack"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``eval`` subcommand."""
    parser = commands.add_parser(
        "eval", help="clean accuracy, robust accuracy per attack and the worst case over attacks"
    )
    add_model_options(parser)
    add_data_options(parser)
    parser.add_argument(
        "--suite",
        help=f"a named set of attacks: {', '.join(SUITE_NAMES)} (default {DEFAULT_SUITE}, the reference's standard "
        "AutoAttack); see docs/evaluation.md",
    )
    parser.add_argument(
        "--attacks",
        "--attack",
        dest="attacks",
        help="comma-separated attack names instead of a suite, run cheapest first; see `hmcam attacks`",
    )
    parser.add_argument(
        "--eps", type=float, help="radius of the threat model's ball (default: the checkpoint's training eps)"
    )
    parser.add_argument("--norm", default="linf", choices=("linf", "l2", "l1"))
    parser.add_argument(
        "--steps", type=int, help="gradient steps of each iterative attack (default 20; paper, fast or --attacks only)"
    )
    parser.add_argument(
        "--restarts",
        type=int,
        help="runs of each attack with a random start (default 1; paper, fast or --attacks only)",
    )
    parser.add_argument(
        "--alpha", type=float, help="step size of the iterative attacks (default: each attack's own rule)"
    )
    parser.add_argument("--limit", type=int, help="evaluate the first N examples only (default: the whole split)")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per chunk (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random starts (default 0)")
    parser.add_argument(
        "--standalone", action="store_true", help="also report each attack's robust accuracy when run alone"
    )
    parser.add_argument(
        "--check-examples",
        type=int,
        default=500,
        help="examples used by the gradient-masking checks (default 500; 0 skips the checks)",
    )
    parser.add_argument(
        "--source", help="a checkpoint to craft transfer (black-box) examples on, for the masking check"
    )
    parser.add_argument("--out", help="run folder: results, per-example table, report and the resumable state")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_option(parser)
    parser.set_defaults(run=run)


def _check_options(args: argparse.Namespace) -> list[str] | None:
    """The attack names (None for a suite); every option that can be wrong is checked here, before any loading."""
    from hmcam.attacks import get_attack
    from hmcam.core.validate import check_positive_float
    from hmcam.evaluation import get_suite

    for option, value, least in (
        ("--batch-size", args.batch_size, 1),
        ("--limit", args.limit, 1),
        ("--steps", args.steps, 1),
        ("--restarts", args.restarts, 1),
        ("--check-examples", args.check_examples, 0),
    ):
        if value is not None and value < least:
            raise ValueError(f"{option} must be >= {least}, got {value}")
    if args.eps is not None:
        check_positive_float("eps", args.eps)
    if args.alpha is not None:
        check_positive_float("alpha", args.alpha)
    if args.out is not None:
        check_output_folder(args.out)
    if args.attacks is None:
        suite = get_suite(DEFAULT_SUITE if args.suite is None else args.suite)
        if not suite.tunable:
            for option, value in (("--steps", args.steps), ("--restarts", args.restarts), ("--alpha", args.alpha)):
                if value is not None:
                    raise ValueError(
                        f"suite {suite.name} fixes its attacks' settings, as the reference does; {option} applies to "
                        "--suite paper, --suite fast and --attacks"
                    )
        return None
    if args.suite is not None:
        raise ValueError("give --suite or --attacks, not both")
    names = [name.strip().lower() for name in args.attacks.split(",")]
    if not all(names):
        raise ValueError(f"--attacks {args.attacks!r} has an empty entry; give comma-separated attack names")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--attacks {args.attacks!r} names {', '.join(repeated)} more than once")
    for name in names:
        get_attack(name)
    return names


def training_eps(metadata: dict[str, Any], checkpoint: str) -> float:
    """The eps the checkpoint was trained (else evaluated) with, from its metadata; an error naming the fix if none."""
    training = metadata.get("training")
    training = training if isinstance(training, dict) else {}
    for section in ("method", "evaluation"):
        part = training.get(section)
        value = part.get("eps") if isinstance(part, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    raise ValueError(
        f"{checkpoint} records no training eps (no training.method.eps or training.evaluation.eps in its metadata); "
        "pass --eps"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate the checkpoint under the attacks; write the files into ``--out`` (rank 0) and return the summary."""
    names = _check_options(args)

    import torch

    from hmcam.core.distributed import barrier, setup_distributed, teardown_distributed
    from hmcam.evaluation import evaluate_robustness
    from hmcam.models import load_checkpoint

    context = setup_distributed(args.device)
    try:
        # Rank 0 alone may download the data; the others read the files once they are complete.
        if context.is_main:
            model, metadata, test = checkpoint_and_data(args)
        barrier(context)
        if not context.is_main:
            model, metadata, test = checkpoint_and_data(args)
        eps = args.eps if args.eps is not None else training_eps(metadata, args.checkpoint)
        device = test.images.device
        source = None
        if args.source is not None:
            source, source_metadata = load_checkpoint(args.source, device=device)
            shape = tuple(source_metadata.get("input_shape") or ())
            if shape and shape != tuple(test.images.shape[1:]):
                raise ValueError(
                    f"--source {args.source} takes inputs of shape {shape}, not {tuple(test.images.shape[1:])}"
                )
        if device.type == "cpu" and test.images.dim() == 4:
            # NHWC convolutions are faster on CPUs (benchmarks/training.py); the model computes the same function.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        result = evaluate_robustness(
            model,
            test.images,
            test.labels,
            names,
            suite=None if names is not None else (args.suite or DEFAULT_SUITE),
            eps=eps,
            norm=args.norm,
            steps=args.steps,
            restarts=args.restarts,
            alpha=args.alpha,
            batch_size=args.batch_size,
            seed=args.seed,
            standalone=args.standalone,
            check_examples=args.check_examples,
            source=source,
            state_dir=None if args.out is None else check_output_folder(args.out) / "state",
            context=context,
            progress=not args.no_progress,
        )
    finally:
        teardown_distributed(context)
    summary: dict[str, Any] = {"checkpoint": args.checkpoint, **result.to_dict()}
    if context.is_main:
        for warning in result.warnings:
            print(f"hmcam eval: warning: {warning}", file=sys.stderr)
        if args.out is not None:
            known = {"dataset": test.info.name, "architecture": metadata.get("architecture")}  # robustbench.json
            summary["files"] = result.save(args.out, {"checkpoint": args.checkpoint}, known)
    return summary
