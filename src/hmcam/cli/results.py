"""``hmcam results``: publish a finished reproduction into a committed folder, and generate its results page."""

from __future__ import annotations

import argparse
import sys
from typing import Any

PUBLISHED = "results/small"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``results`` subcommand with ``publish`` and ``page``."""
    parser = commands.add_parser("results", help="publish a reproduction and generate the results page")
    actions = parser.add_subparsers(dest="action", required=True)
    publish = actions.add_parser(
        "publish",
        help="copy a finished reproduction's results (JSON, CSV, PNG) into a committed folder",
        description="Copy the tables, JSON and figures of a finished `hmcam reproduce` folder (no caches, "
        "checkpoints or HTML) into a folder to commit, replacing it at once.",
    )
    publish.add_argument("run_dir", metavar="RUN_DIR", help="the finished reproduction's folder")
    publish.add_argument("--to", default=PUBLISHED, help=f"the folder to write (default {PUBLISHED})")
    publish.set_defaults(run=run_publish)
    page = actions.add_parser(
        "page",
        help="generate docs/results.md and the README's results block from published results",
        description="Render the results page (Markdown, with its figure copies beside it) and the README's block "
        "between <!-- results:start --> and <!-- results:end --> from a published reproduction.",
    )
    page.add_argument("results_dir", nargs="?", default=PUBLISHED, metavar="RESULTS_DIR", help="published results")
    page.add_argument("--markdown", default="docs/results.md", help="the page to write (default docs/results.md)")
    page.add_argument("--readme", default="README.md", help="the README whose block to rewrite (default README.md)")
    page.add_argument("--check", action="store_true", help="write nothing; exit 1 naming a file that is stale")
    page.set_defaults(run=run_page)


def run_publish(args: argparse.Namespace) -> dict[str, Any]:
    """Publish the run; returns where it went."""
    from hmcam.reporting.results_page import publish

    return {"published": str(publish(args.run_dir, args.to))}


def run_page(args: argparse.Namespace) -> dict[str, Any]:
    """Write the page and the README block, or with ``--check`` exit 1 when one of them is stale."""
    from hmcam.reporting.results_page import stale_files, write_page

    if args.check:
        stale = stale_files(args.results_dir, args.markdown, args.readme)
        if stale:
            command = f"hmcam results page {args.results_dir}"
            print(f"hmcam results: {stale[0]} is stale ({len(stale)} file(s)); run `{command}`", file=sys.stderr)
            raise SystemExit(1)
        return {"fresh": [args.markdown, args.readme]}
    return {"written": [str(path) for path in write_page(args.results_dir, args.markdown, args.readme)]}
