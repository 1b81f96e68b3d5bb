"""``hmcam demo``: the embedded demo on Fashion-MNIST."""

from __future__ import annotations

import argparse

from hmcam.cli.common import check_output_folder, positive_int


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` subcommand."""
    parser = commands.add_parser(
        "demo",
        help="the embedded demo on Fashion-MNIST",
        description="Train two networks, attack one (white-box) and send the examples to the other (black-box), "
        "draw HMCAM's sequence with its MCMC diagnostics, and write a run folder with report.html.",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--examples", type=positive_int, default=1000, help="test images attacked (default 1000)")
    parser.add_argument("--epochs", type=positive_int, default=2, help="training epochs of the demo model (default 2)")
    parser.add_argument("--train-limit", type=positive_int, help="train on the first N images only (default: all)")
    parser.add_argument(
        "--data-root", help="folder holding Fashion-MNIST (else $HMCAM_DATA, ~/.cache/hmcam, system places)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> str:
    """Train the demo models (or reuse them), run the attacks and write the run folder; returns the summary."""
    # Deferred: torch and the experiments load only when the command runs, not for `hmcam --help`.
    from hmcam.experiments.demo import main_summary, run_demo

    out = check_output_folder(args.out)
    result = run_demo(
        out, examples=args.examples, epochs=args.epochs, data_root=args.data_root, train_limit=args.train_limit
    )
    return main_summary(result)
