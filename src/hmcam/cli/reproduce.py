"""``hmcam reproduce``: every experiment of the paper in order, resumable, ending with one report page."""

from __future__ import annotations

import argparse
from typing import Any

from hmcam.cli.common import add_device_option, check_output_folder
from hmcam.core.validate import choose
from hmcam.experiments.registry import SCALE_NAMES

REPRODUCE_HELP = (
    "Run every experiment of the paper in order (Tables 2-5, 7-9 and Figs. 1-5) into one folder, then render "
    "OUT/report.html. A rerun skips the finished experiments and continues the interrupted one."
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``reproduce`` subcommand."""
    parser = commands.add_parser(
        "reproduce", help="re-run every experiment of the paper and report", description=REPRODUCE_HELP
    )
    parser.add_argument(
        "--scale",
        default="smoke",
        choices=SCALE_NAMES,
        help="smoke: under a minute; small: this 2-core CPU (the README gives the time); paper: days on a GPU",
    )
    parser.add_argument("--out", required=True, help="run folder (a rerun continues what it holds)")
    parser.add_argument("--models", help="folder of the attack experiments' trained models (default: OUT/models)")
    parser.add_argument(
        "--data-root", help="folder holding the datasets (else $HMCAM_DATA, ~/.cache/hmcam, system places)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the reproduction; returns where the report is, each experiment's minutes and the verdicts."""
    # Deferred: torch and the experiments load only when the command runs, not for `hmcam --help`.
    from hmcam.experiments.claims import VERDICTS
    from hmcam.experiments.reproduce import REPRODUCE_SCALES, run_reproduce

    out = check_output_folder(args.out)
    models = check_output_folder(args.models) if args.models is not None else None
    result = run_reproduce(
        choose("scale", args.scale, REPRODUCE_SCALES),
        out,
        device=args.device,
        data_root=args.data_root,
        models_dir=models,
        progress=not args.no_progress,
    )
    return {
        "report": result["report"],
        "minutes": {entry["experiment"]: round(entry["seconds"] / 60, 2) for entry in result["experiments"]},
        "verdicts": {verdict: sum(claim["verdict"] == verdict for claim in result["claims"]) for verdict in VERDICTS},
    }
