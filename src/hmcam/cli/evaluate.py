"""``hmcam eval CHECKPOINT``: clean and robust accuracy of a checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from hmcam.cli.common import (
    add_attack_options,
    add_data_options,
    attack_settings,
    check_output_file,
    checkpoint_and_data,
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``eval`` subcommand."""
    parser = commands.add_parser("eval", help="clean and robust accuracy of a checkpoint")
    parser.add_argument("checkpoint")
    add_data_options(parser)
    add_attack_options(parser, "pgd")
    parser.add_argument("--out", help="also write the result as JSON to this file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Clean and robust accuracy under one attack; written to ``--out`` when given."""
    from hmcam.experiments.attack_run import run_attack
    from hmcam.storage import atomic_write_json

    out = None if args.out is None else check_output_file(args.out)
    model, _, test = checkpoint_and_data(args)
    summary = run_attack(model, attack_settings(args), test.images, test.labels, batch_size=args.batch_size).summary
    result = {"checkpoint": args.checkpoint, **summary}
    if out is not None:
        atomic_write_json(out, result)
    return result
