"""``hmcam experiment NAME``: re-run one of the paper's experiments at a scale the machine can afford."""

from __future__ import annotations

import argparse
from typing import Any

from hmcam.cli.common import add_device_option, check_output_folder, positive_int

# Spelled out so that `hmcam --help` needs no torch import; tests check it against hmcam.experiments.
SCALES = ("smoke", "small", "paper")


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
    efficiency.add_argument(
        "--scale",
        default="smoke",
        choices=SCALES,
        help="smoke: seconds; small: hours on 2 CPU cores (Fashion-MNIST); paper: the paper's settings, for a GPU",
    )
    efficiency.add_argument("--out", required=True, help="run folder (resumed when it holds a run of the same plan)")
    efficiency.add_argument(
        "--seeds", type=int, nargs="+", help="seeds to train each method with (default: the scale's)"
    )
    efficiency.add_argument("--methods", help="comma-separated arms to run, by label or method name (default: all)")
    efficiency.add_argument("--budget", type=float, help="gradient passes per training example (default: the scale's)")
    efficiency.add_argument("--train-limit", type=positive_int, help="train on the first N examples only")
    efficiency.add_argument(
        "--data-root", help="folder holding the dataset (else $HMCAM_DATA, ~/.cache/hmcam, system places)"
    )
    efficiency.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_option(efficiency)
    efficiency.set_defaults(run=run_efficiency)


def run_efficiency(args: argparse.Namespace) -> dict[str, Any]:
    """Run the equal-cost training comparison; returns where the report is and its summary table."""
    from hmcam.experiments.at_efficiency import get_scale, restrict, run_efficiency

    out = check_output_folder(args.out)
    methods = None
    if args.methods is not None:
        methods = [name.strip() for name in args.methods.split(",")]
        if not all(methods):
            raise ValueError(f"--methods must be comma-separated names, got {args.methods!r}")
    scale = restrict(
        get_scale(args.scale), seeds=args.seeds, methods=methods, budget=args.budget, train_limit=args.train_limit
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
