"""What several subcommands share: data and attack options, checkpoint loading and output checks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a subcommand runs, to keep `hmcam --help` fast
    from torch import nn

    from hmcam.data import ImageDataset
    from hmcam.experiments.attack_run import AttackSettings


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, with an error naming the value otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def check_output_folder(path: str | Path) -> Path:
    """``path`` as a folder to write into: an existing file there, or above it, is an error naming it."""
    path = Path(path)
    for place in (path, *path.parents):
        if place.exists() and not place.is_dir():
            raise NotADirectoryError(f"--out {path}: {place} is a file, not a folder")
    return path


def check_output_file(path: str | Path) -> Path:
    """``path`` as a file to write: a folder there, or a file above it, is an error naming it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--out {path} is a folder; give a file name such as {path / 'result.json'}")
    check_output_folder(path.parent)
    return path


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--dataset`` and ``--data-root``."""
    parser.add_argument(
        "--dataset", help="mnist, fashion-mnist, cifar10, cifar100 or imagenet (default: the checkpoint's)"
    )
    parser.add_argument(
        "--data-root", help="folder holding the dataset (else $HMCAM_DATA, ~/.cache/hmcam, system places)"
    )


def add_attack_options(parser: argparse.ArgumentParser, default: str) -> None:
    """The options of one attack run: name, threat model, steps, samples, subset, batch, seed and device."""
    parser.add_argument("--attack", default=default, help=f"attack name (default {default}); see `hmcam attacks`")
    parser.add_argument("--eps", type=float, default=0.1, help="radius of the threat model's ball (default 0.1)")
    parser.add_argument("--alpha", type=float, help="step size (default: the attack's own rule)")
    parser.add_argument("--steps", type=positive_int, default=10, help="T: gradient steps (per transition for chains)")
    parser.add_argument("--samples", type=positive_int, default=1, help="S: chain transitions for hmcam and hmc")
    parser.add_argument("--chains", type=positive_int, default=1, help="C: chains per image for hmcam and hmc")
    parser.add_argument(
        "--momentum-refresh",
        type=float,
        default=0.0,
        help="hmcam: random initial momentum at each transition, in units of the mean |gradient| (0: the paper's)",
    )
    parser.add_argument("--norm", default="linf", choices=("linf", "l2", "l1"))
    parser.add_argument("--targeted", action="store_true", help="aim at class (label + 1) mod classes")
    parser.add_argument("--limit", type=positive_int, default=1000, help="number of test images (default 1000)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per batch (default 128)")
    parser.add_argument("--seed", type=int, default=0)
    add_device_option(parser)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``: auto (CUDA when available), cpu, cuda or cuda:N."""
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu, cuda or cuda:N")


def attack_settings(args: argparse.Namespace) -> AttackSettings:
    """The :class:`~hmcam.experiments.attack_run.AttackSettings` that the attack options describe."""
    from hmcam.attacks import ATTACK_REGISTRY
    from hmcam.experiments.attack_run import AttackSettings

    name = args.attack.lower()
    # The flags are shared by every attack; those this attack does not take (--samples for PGD, --eps and
    # --norm for CW-L2) are not passed to it, as docs/cli.md says. The Python API refuses them instead.
    accepted = set(ATTACK_REGISTRY.accepts(name))
    given = {
        "eps": args.eps,
        "steps": args.steps,
        "samples": args.samples,
        "chains": args.chains,
        "momentum_refresh": args.momentum_refresh,
        "alpha": args.alpha,
        "norm": args.norm,
    }
    taken = {key: value for key, value in given.items() if key in accepted}
    return AttackSettings(name, targeted=args.targeted, seed=args.seed, **taken)


def checkpoint_and_data(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], ImageDataset]:
    """The checkpoint's model on ``--device`` and the first ``--limit`` evaluation images of its dataset."""
    import torch

    from hmcam.core.distributed import resolve_device
    from hmcam.data import ImageDataset, load_dataset
    from hmcam.models import load_checkpoint
    from hmcam.training.datasets import evaluation_split

    device = resolve_device(args.device)
    model, metadata = load_checkpoint(args.checkpoint, device=device)
    dataset = args.dataset or metadata.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"{args.checkpoint} does not name its dataset; pass --dataset")
    loaded = load_dataset(dataset, split=evaluation_split(dataset), root=args.data_root, limit=args.limit)
    if isinstance(loaded, ImageDataset):
        images, labels = loaded.images, loaded.labels
    else:  # image files (ImageNet): the evaluation subset is decoded once, here
        images = torch.stack([loaded[i][0] for i in range(len(loaded))])
        labels = loaded.labels[: len(loaded)]
    expected = tuple(metadata.get("input_shape") or ())
    if expected and tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"{args.checkpoint} takes inputs of shape {expected} but {dataset} has {tuple(images.shape[1:])}"
        )
    return model, metadata, ImageDataset(images.to(device), labels.to(device), loaded.info)
