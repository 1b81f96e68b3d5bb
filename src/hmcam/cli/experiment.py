"""``hmcam experiment NAME``: re-run one of the paper's experiments at a scale the machine can afford."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from hmcam.cli.common import add_device_option, check_output_folder, positive_int
from hmcam.experiments.registry import EXPERIMENTS, SCALE_NAMES

SCALE_HELP = "smoke: seconds; small: this 2-core CPU, Fashion-MNIST; paper: the paper's CIFAR-10 setting, for a GPU"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="smoke", choices=SCALE_NAMES, help=SCALE_HELP)
    parser.add_argument("--out", required=True, help="run folder (a rerun continues what it holds)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the scale's)")
    parser.add_argument(
        "--data-root", help="folder holding the dataset (else $HMCAM_DATA, ~/.cache/hmcam, system places)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_option(parser)


def _attack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=positive_int, help="test images attacked (default: the scale's)")
    parser.add_argument(
        "--zoo-seeds",
        type=int,
        nargs="+",
        help="seeds of the zoos attacked, one run each, claims judged on all (default: the scale's)",
    )
    parser.add_argument(
        "--models", help="folder of the trained models, shared between experiments (default: OUT/models)"
    )


def _training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", help="comma-separated arms to run, by label or method name (default: all)")
    parser.add_argument("--budget", type=float, help="gradient passes per training example (default: the scale's)")
    parser.add_argument("--train-limit", type=positive_int, help="train on the first N examples only")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``experiment`` subcommand with one child per experiment of the registry (the demo has its own)."""
    parser = commands.add_parser("experiment", help="re-run an experiment of the paper (tables, figures, report)")
    experiments = parser.add_subparsers(dest="experiment", required=True)
    for name, entry in EXPERIMENTS.items():
        if entry.kind == "tour":
            continue
        child = experiments.add_parser(name, help=entry.reproduces, description=f"{entry.reproduces}; resumes --out.")
        _common(child)
        (_attack_options if entry.kind == "attack" else _training_options)(child)
        child.set_defaults(run=run_experiment)


def _distinct_seeds(flag: str, seeds: list[int]) -> tuple[int, ...]:
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise ValueError(f"{flag} must be distinct non-negative integers, got {seeds}")
    return tuple(seeds)


def _attack_scale(scale: Any, args: argparse.Namespace) -> Any:
    if args.seeds is not None:
        scale = dataclasses.replace(scale, seeds=_distinct_seeds("--seeds", args.seeds))
    if args.images is not None:
        scale = dataclasses.replace(scale, images=args.images)
    if args.zoo_seeds is not None:
        scale = dataclasses.replace(scale, zoo_seeds=_distinct_seeds("--zoo-seeds", args.zoo_seeds))
    return scale


def _training_scale(scale: Any, args: argparse.Namespace) -> Any:
    from hmcam.experiments.at_efficiency_plan import restrict

    methods = None
    if args.methods is not None:
        methods = [name.strip() for name in args.methods.split(",")]
        if not all(methods):
            raise ValueError(f"--methods must be comma-separated names, got {args.methods!r}")
    return restrict(scale, seeds=args.seeds, methods=methods, budget=args.budget, train_limit=args.train_limit)


def run_experiment(args: argparse.Namespace) -> dict[str, Any]:
    """Run one experiment at the chosen scale; returns where its report is and the verdict on each claim."""
    # Deferred: the experiments' modules (torch, scipy) load only when one runs, not for `hmcam --help`.
    from hmcam.experiments.framework import RunOptions

    entry = EXPERIMENTS[args.experiment]
    out = check_output_folder(args.out)
    models = None
    if entry.kind == "attack" and args.models is not None:
        models = check_output_folder(args.models)
    experiment = entry.load()
    scale = experiment.scale(args.scale)
    scale = _attack_scale(scale, args) if entry.kind == "attack" else _training_scale(scale, args)
    result = experiment.run(scale, RunOptions(out, args.device, args.data_root, models, not args.no_progress))
    return {
        "out": result["out"],
        "report": str(out / "report.md"),
        "claims": [{"claim": claim["claim"], "verdict": claim["verdict"]} for claim in result["claims"]],
    }
