"""``hmcam models``, ``hmcam attacks`` and ``hmcam datasets``: what the library offers."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the three listing subcommands."""
    commands.add_parser("models", help="list the architectures").set_defaults(run=run_models)
    commands.add_parser("attacks", help="list the attacks").set_defaults(run=run_attacks)
    datasets = commands.add_parser("datasets", help="list the datasets and where their files were found")
    datasets.add_argument("--data-root")
    datasets.set_defaults(run=run_datasets)


def run_models(args: argparse.Namespace) -> dict[str, Any]:
    """Every architecture with its family, input shape and published size."""
    from hmcam.models import MODELS

    return {
        name: {"family": spec.family, "input_shape": list(spec.input_shape), "published_params": spec.published_params}
        for name, spec in MODELS.items()
    }


def run_attacks(args: argparse.Namespace) -> dict[str, Any]:
    """Every attack name with the first line of its docstring."""
    from hmcam.attacks import ATTACKS

    return {name: (klass.__doc__ or "").strip().splitlines()[0] for name, klass in ATTACKS.items()}


def run_datasets(args: argparse.Namespace) -> dict[str, Any]:
    """Every dataset with its shape, classes and the folder it was found in."""
    from hmcam.data import DATASETS, find_dataset

    listing = {}
    for name, info in DATASETS.items():
        found = find_dataset(name, root=args.data_root)
        listing[name] = {
            "input_shape": list(info.input_shape),
            "classes": info.num_classes,
            "found": str(found) if found else None,
        }
    return listing
