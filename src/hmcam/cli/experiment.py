"""``hmcam experiment NAME``: re-run one of the paper's experiments at a scale the machine can afford."""

from __future__ import annotations

import argparse
from typing import Any

from hmcam.cli.common import add_device_option, check_output_folder, positive_int
from hmcam.core.validate import choose

# Spelled out so that `hmcam --help` needs no torch import; tests check them against hmcam.experiments.
SCALES = ("smoke", "small", "paper")
ATTACK_EXPERIMENTS = {
    "transfer": "Table 2: white- and black-box success of five attacks, sources x targets",
    "ensemble": "Table 3: attack an ensemble, success on it and on the held-out model",
    "iterations": "Fig. 2: success of M-PGD and HMCAM against the number of iterations",
    "step-size": "Fig. 3: success against the step size, and the fraction of steps capped at eps",
    "diversity": "Fig. 1: diversity of many samples of one image (t-SNE), ESS and R-hat",
    "targeted": "Table 8: targeted attacks with 10 and 100 steps on adversarially trained models",
    "all-or-nothing": "Table 9 analogue: targeted feature-space attack, success only if all samples succeed",
    "few-sample": "Fig. 4: adversarial training data from d images (HMCAM: S samples each) against d S images",
}
SCALE_HELP = "smoke: seconds; small: this 2-core CPU, Fashion-MNIST; paper: the paper's CIFAR-10 setting, for a GPU"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="smoke", choices=SCALES, help=SCALE_HELP)
    parser.add_argument("--out", required=True, help="run folder (a rerun continues what it holds)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the scale's)")
    parser.add_argument(
        "--data-root", help="folder holding the dataset (else $HMCAM_DATA, ~/.cache/hmcam, system places)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_option(parser)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``experiment`` subcommand and its experiments."""
    parser = commands.add_parser("experiment", help="re-run an experiment of the paper (tables, figures, report)")
    experiments = parser.add_subparsers(dest="experiment", required=True)
    efficiency = experiments.add_parser(
        "at-efficiency",
        help="adversarial training methods at equal cost (Tables 4, 5, 7 and Fig. 5)",
        description="Train natural, PGD-AT, Free, YOPO, fast, TRADES, CAT and CAT-CE at equal budgets in gradient "
        "passes and score them (clean, PGD, M-PGD, CW-L-inf, worst case); resumes what --out holds.",
    )
    _common(efficiency)
    efficiency.add_argument("--methods", help="comma-separated arms to run, by label or method name (default: all)")
    efficiency.add_argument("--budget", type=float, help="gradient passes per training example (default: the scale's)")
    efficiency.add_argument("--train-limit", type=positive_int, help="train on the first N examples only")
    efficiency.set_defaults(run=run_efficiency)
    for name, description in ATTACK_EXPERIMENTS.items():
        child = experiments.add_parser(name, help=description, description=description)
        _common(child)
        child.add_argument("--images", type=positive_int, help="test images attacked (default: the scale's)")
        child.add_argument(
            "--zoo-seeds",
            type=int,
            nargs="+",
            help="seeds of the zoos attacked, one run each, claims judged on all (default: the scale's)",
        )
        child.add_argument(
            "--models", help="folder of the trained models, shared between experiments (default: OUT/models)"
        )
        child.set_defaults(run=run_attack_experiment)


def run_efficiency(args: argparse.Namespace) -> dict[str, Any]:
    """Run the equal-cost training comparison; returns where the report is and its summary table."""
    from hmcam.experiments.at_efficiency import SCALES as TRAINING_SCALES
    from hmcam.experiments.at_efficiency import restrict, run_efficiency

    out = check_output_folder(args.out)
    methods = None
    if args.methods is not None:
        methods = [name.strip() for name in args.methods.split(",")]
        if not all(methods):
            raise ValueError(f"--methods must be comma-separated names, got {args.methods!r}")
    scale = restrict(
        choose("scale", args.scale, TRAINING_SCALES),
        seeds=args.seeds,
        methods=methods,
        budget=args.budget,
        train_limit=args.train_limit,
    )
    result = run_efficiency(scale, out, device=args.device, data_root=args.data_root, progress=not args.no_progress)
    return {
        "out": result["out"],
        "report": str(out / "report.md"),
        "means": {
            study: {arm: {m: round(v["mean"], 4) for m, v in metrics.items()} for arm, metrics in part["arms"].items()}
            for study, part in result["summary"].items()
        },
    }


def run_attack_experiment(args: argparse.Namespace) -> dict[str, Any]:
    """Run one attack experiment; returns where its report is and the verdict on each claim."""
    import dataclasses

    from hmcam.experiments.framework import RunOptions
    from hmcam.experiments.registry import ATTACK_EXPERIMENTS as REGISTERED
    from hmcam.experiments.setup import ATTACK_SCALES

    out = check_output_folder(args.out)
    models = check_output_folder(args.models) if args.models is not None else None
    scale = choose("scale", args.scale, ATTACK_SCALES)
    if args.seeds is not None:
        if len(set(args.seeds)) != len(args.seeds) or any(seed < 0 for seed in args.seeds):
            raise ValueError(f"--seeds must be distinct non-negative integers, got {args.seeds}")
        scale = dataclasses.replace(scale, seeds=tuple(args.seeds))
    if args.images is not None:
        scale = dataclasses.replace(scale, images=args.images)
    if args.zoo_seeds is not None:
        if len(set(args.zoo_seeds)) != len(args.zoo_seeds) or any(seed < 0 for seed in args.zoo_seeds):
            raise ValueError(f"--zoo-seeds must be distinct non-negative integers, got {args.zoo_seeds}")
        scale = dataclasses.replace(scale, zoo_seeds=tuple(args.zoo_seeds))
    options = RunOptions(out, args.device, args.data_root, models, not args.no_progress)
    result = REGISTERED[args.experiment].run(scale, options)
    return {
        "out": result["out"],
        "report": str(out / "report.md"),
        "claims": [{"claim": claim["claim"], "verdict": claim["verdict"]} for claim in result["claims"]],
    }
