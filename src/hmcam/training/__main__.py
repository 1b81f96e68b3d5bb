"""Script entry point: ``python -m hmcam.training [--config JSON] [--FIELD VALUE ...] [--resume]``.

Every :class:`~hmcam.training.TrainConfig` field is a flag (``--train-limit 512``, ``--method pgd``,
``--method-kwargs '{"eps": 0.1}'``); values of non-string fields are read as JSON (numbers,
``true``/``false``, ``null``, lists, objects). ``--config`` takes a JSON file or an inline JSON
object of fields, which the flags override. The run summary is printed as JSON by rank 0. Under
``torchrun --nproc_per_node=K -m hmcam.training ...`` the processes train together.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hmcam.training.config import TrainConfig
from hmcam.training.trainer import train


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: ``--config``, ``--resume`` and one flag per TrainConfig field."""
    parser = argparse.ArgumentParser(
        prog="python -m hmcam.training",
        description="Train a model with a natural or adversarial training method (see hmcam.training).",
    )
    parser.add_argument("--config", help="a JSON file, or an inline JSON object, of TrainConfig fields")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    defaults = TrainConfig().to_dict()
    for spec in dataclasses.fields(TrainConfig):
        parser.add_argument(
            _flag(spec.name),
            dest=spec.name,
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=f"{spec.type}, default {json.dumps(defaults[spec.name])}",
        )
    return parser


def _read_config(text: str) -> dict[str, Any]:
    source = text if text.lstrip().startswith("{") else Path(text).read_text()
    values = json.loads(source)
    if not isinstance(values, dict):
        raise ValueError(f"--config must hold a JSON object of fields, got {type(values).__name__}")
    return values


def parse_config(argv: Sequence[str] | None = None) -> tuple[TrainConfig, bool]:
    """The TrainConfig and the resume flag that the command line ``argv`` describes."""
    parser = build_parser()
    arguments = vars(parser.parse_args(argv))
    resume = arguments.pop("resume")
    config_text = arguments.pop("config")
    try:
        values = {} if config_text is None else _read_config(config_text)
        types = {spec.name: spec.type for spec in dataclasses.fields(TrainConfig)}
        for name, text in arguments.items():
            # String fields take the text as it is; everything else is JSON.
            values[name] = text if types[name].startswith("str") else json.loads(text)
        return TrainConfig.from_dict(values), resume
    except (OSError, ValueError, TypeError) as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, train, print the summary as JSON (rank 0 only) and return the exit status."""
    config, resume = parse_config(argv)
    summary = train(config, resume=resume)
    if os.environ.get("RANK", "0") == "0":
        json.dump(summary, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
