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
        "draw HMCAM's sequence with its MCMC diagnostics, and write a run folder with report.html. The flags "
        "replace fields of the demo's small scale.",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--examples", type=positive_int, help="test images attacked (default 1000)")
    parser.add_argument("--epochs", type=positive_int, help="training epochs of the demo models (default 2)")
    parser.add_argument("--train-limit", type=positive_int, help="train on the first N images only (default: all)")
    parser.add_argument(
        "--data-root", help="folder holding Fashion-MNIST (else $HMCAM_DATA, ~/.cache/hmcam, system places)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> str:
    """Train the demo models (or reuse them), run the attacks and write the run folder; returns the summary."""
    # Deferred: torch and the experiments load only when the command runs, not for `hmcam --help`.
    from dataclasses import replace

    from hmcam.experiments.demo import EXPERIMENT, main_summary
    from hmcam.experiments.framework import RunOptions

    out = check_output_folder(args.out)
    given = {"examples": args.examples, "epochs": args.epochs, "train_limit": args.train_limit}
    scale = replace(EXPERIMENT.scale("small"), **{name: value for name, value in given.items() if value is not None})
    return main_summary(EXPERIMENT.run(scale, RunOptions(out, data_root=args.data_root)))
