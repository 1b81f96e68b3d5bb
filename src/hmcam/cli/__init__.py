"""The ``hmcam`` command line: one module per subcommand, each a thin layer over the library.

Every subcommand module has ``register(commands)``, which adds its parser and sets ``run``. Errors
a user can cause (bad values, missing or damaged files, an unsafe pickle, a missing optional
dependency, a diverging training run) end in one line on stderr and exit status 2; anything else
is reported in one line too, with ``--traceback`` to see where it came from.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import traceback
import typing
from collections.abc import Sequence

from hmcam.cli import attack, demo, evaluate, experiment, info, report, reproduce, results, train

SUBCOMMANDS = (train, evaluate, attack, experiment, reproduce, results, report, info, demo)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per task (its subcommands' parsers are one-line too)."""
    parser = OneLineParser(prog="hmcam", description="Probabilistic adversarial attack and learning (HMCAM, CAT).")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(commands)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from hmcam.data import DatasetNotFoundError
    from hmcam.models import CheckpointError
    from hmcam.training import TrainingCollapsed

    return (
        TrainingCollapsed,
        ValueError,
        TypeError,
        OSError,
        FloatingPointError,
        ImportError,
        RecursionError,
        KeyError,
        pickle.UnpicklingError,
        DatasetNotFoundError,
        CheckpointError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; print its result (JSON unless it is text) and return the exit status."""
    args = build_parser().parse_args(argv)
    from hmcam.reporting.provenance import record_command

    record_command(list(sys.argv[1:] if argv is None else argv))
    try:
        result = args.run(args)
    except KeyboardInterrupt:
        print(f"hmcam {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.traceback:
            traceback.print_exc()
        expected = isinstance(error, _user_errors())
        kind = "error" if expected else f"internal error ({type(error).__name__}; rerun with --traceback)"
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"hmcam {args.command}: {kind}: {message}", file=sys.stderr)
        return 2 if expected else 1
    # Under torchrun every process runs the command; one report is enough.
    if os.environ.get("RANK", "0") == "0":
        print(result if isinstance(result, str) else json.dumps(result, indent=2, default=str))
    return 0
