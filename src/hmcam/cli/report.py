"""``hmcam report``: one self-contained HTML page (and its Markdown) for any number of run folders."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` subcommand."""
    parser = commands.add_parser(
        "report",
        help="render run folders into one HTML page",
        description="Render training, evaluation, attack, experiment and reproduction folders into one "
        "self-contained HTML page (figures embedded, no network needed) and its Markdown beside it.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, in the order the page shows them")
    parser.add_argument("--out", default="report.html", help="the page to write (default report.html); .md beside it")
    parser.add_argument("--title", help="the page's title (default: from the runs)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write the page; returns the paths of the HTML and Markdown files."""
    from hmcam.reporting.page import write_report

    return write_report(args.runs, args.out, title=args.title)
