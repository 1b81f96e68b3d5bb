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


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The positional MODEL and the options that say how to load it: weights, architecture, normalization, data."""
    parser.add_argument(
        "checkpoint",
        metavar="model",
        nargs="?",
        help="an hmcam checkpoint, a TorchScript or torch.export file, FILE.py:FUNCTION, package.module:FUNCTION, "
        "torchvision:NAME or timm:NAME (omit with --architecture)",
    )
    parser.add_argument("--weights", help="state dict for the model: safetensors, or .pt/.pth (read weights-only)")
    parser.add_argument(
        "--architecture",
        help="a published CIFAR architecture for --weights in RobustBench's layout: wrn28_10, wrn34_10, "
        "preact_resnet18, preact_resnet18_v2, resnet18",
    )
    parser.add_argument("--mean", help="per-channel mean the model expects, comma-separated (wraps it to take [0, 1])")
    parser.add_argument("--std", help="per-channel std the model expects, comma-separated (with --mean)")
    parser.add_argument(
        "--normalization", help="the mean and std of a dataset hmcam knows, such as cifar10 or imagenet"
    )
    parser.add_argument("--num-classes", type=positive_int, help="classes the model predicts (checked on one batch)")
    parser.add_argument("--data", help="evaluation data: a safetensors or .npz file with images in [0, 1] and labels")


def _model_name(args: argparse.Namespace) -> str:
    if getattr(args, "architecture", None) is not None:
        return f"--architecture {args.architecture} --weights {args.weights}"
    return str(args.checkpoint)


def _check_model_options(args: argparse.Namespace) -> bool:
    """Whether the model is an hmcam checkpoint; one-line errors for options that do not go together."""
    given = getattr(args, "checkpoint", None)
    architecture = getattr(args, "architecture", None)
    if architecture is not None and given == f"--architecture {architecture} --weights {args.weights}":
        given = None  # set by an earlier checkpoint_and_data on the same arguments
    if (given is None) == (architecture is None):
        raise ValueError("give a model (a file or FILE.py:FUNCTION) or --architecture NAME --weights FILE, not both")
    if architecture is not None and getattr(args, "weights", None) is None:
        raise ValueError(f"--architecture {architecture} needs --weights FILE")
    if getattr(args, "data", None) is not None and args.dataset is not None:
        raise ValueError("give --dataset or --data, not both")
    if getattr(args, "normalization", None) is not None and (args.mean is not None or args.std is not None):
        raise ValueError("give --normalization or --mean and --std, not both")
    checkpoint = given is not None and str(given).endswith(".safetensors") and architecture is None
    if checkpoint:
        for option in ("weights", "mean", "std", "normalization"):
            if getattr(args, option, None) is not None:
                raise ValueError(
                    f"{given} is an hmcam checkpoint, which carries its weights and normalization; "
                    f"--{option} applies to other models"
                )
    return checkpoint


def _evaluation_data(args: argparse.Namespace, dataset: Any, what: str) -> ImageDataset:
    """The first ``--limit`` evaluation examples of ``--data`` or of ``dataset``, on the CPU."""
    import torch

    from hmcam.data import ImageDataset, load_dataset
    from hmcam.data.user_file import load_user_data
    from hmcam.training.datasets import evaluation_split

    if getattr(args, "data", None) is not None:
        return load_user_data(args.data, limit=args.limit, num_classes=getattr(args, "num_classes", None))
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"{what} does not name its dataset; pass --dataset or --data")
    loaded = load_dataset(dataset, split=evaluation_split(dataset), root=args.data_root, limit=args.limit)
    if isinstance(loaded, ImageDataset):
        return loaded
    # image files (ImageNet): the evaluation subset is decoded once, here
    images = torch.stack([loaded[i][0] for i in range(len(loaded))])
    return ImageDataset(images, loaded.labels[: len(loaded)], loaded.info)


def _statistics(args: argparse.Namespace) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    from hmcam.data import dataset_info
    from hmcam.models.external import parse_statistics

    if args.normalization is not None:
        info = dataset_info(args.normalization)
        return info.mean, info.std
    if (args.mean is None) != (args.std is None):
        raise ValueError("give both --mean and --std, or neither")
    if args.mean is None:
        return None, None
    return parse_statistics(args.mean, "--mean"), parse_statistics(args.std, "--std")


def check_model_on_data(
    model: nn.Module, data: ImageDataset, num_classes: int | None, what: str, *, labels_only: bool = False
) -> int:
    """The model's number of outputs on one batch of ``data``; a one-line error where it cannot fit the data.

    The width must equal ``num_classes`` where given and the dataset's number of classes, or with
    ``labels_only`` (a user's file, whose classes are known only from its labels) exceed every label.
    """
    import torch

    batch = data.images[:2]
    try:
        with torch.no_grad():
            logits = model(batch)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = ""
        if "Guard failed" in first:
            hint = " (a torch.export program fixed to one batch size: export with a dynamic batch dimension)"
        raise ValueError(
            f"{what} fails on a batch of shape {tuple(batch.shape)} from {data.info.name}: {first}{hint}"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(batch):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{what} must return logits [batch, classes], returned {shape}")
    width = int(logits.shape[1])
    if num_classes is not None and width != num_classes:
        raise ValueError(f"{what} gives {width} logits, not the --num-classes {num_classes}")
    if labels_only:
        if len(data.labels) and int(data.labels.max()) >= width:
            raise ValueError(f"{what} gives {width} logits but {data.info.name} has label {int(data.labels.max())}")
    elif width != data.info.num_classes:
        raise ValueError(f"{what} gives {width} logits but {data.info.name} has {data.info.num_classes} classes")
    return width


def _external_model(args: argparse.Namespace, data: ImageDataset, device: Any) -> tuple[nn.Module, dict[str, Any]]:
    from hmcam.models.external import load_external_model, load_state_dict_file, normalized
    from hmcam.models.published import load_published

    mean, std = _statistics(args)
    channels = int(data.images.shape[1])
    if args.architecture is not None:
        state = load_state_dict_file(args.weights)
        model = load_published(args.architecture, state, str(args.weights), args.num_classes)
        normalization = None
        if mean is not None and std is not None:
            wrapped = normalized(model, mean, std, channels)
            normalization = {"mean": wrapped.mean.flatten().tolist(), "std": wrapped.std.flatten().tolist()}
            model = wrapped
        metadata: dict[str, Any] = {
            "source": args.architecture,
            "kind": "architecture",
            "weights": str(args.weights),
            "normalization": normalization,
        }
        return model.to(device).eval(), metadata
    classes = args.num_classes if args.num_classes is not None else data.info.num_classes
    return load_external_model(
        args.checkpoint, args.weights, num_classes=classes, in_channels=channels, mean=mean, std=std, device=device
    )


def checkpoint_and_data(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], ImageDataset]:
    """The model on ``--device`` and the first ``--limit`` evaluation images of its dataset (or ``--data``).

    The model is an hmcam checkpoint (loaded as it always was), or one :func:`add_model_options` describes:
    a TorchScript / torch.export file, code that builds it with ``--weights``, or ``--architecture``.
    Its output width and input shape are checked against the data on one batch.
    """
    from dataclasses import replace

    from hmcam.core.distributed import resolve_device
    from hmcam.data import ImageDataset
    from hmcam.models import load_checkpoint

    device = resolve_device(args.device)
    what = _model_name(args)
    checkpoint = _check_model_options(args)
    if checkpoint:
        model, metadata = load_checkpoint(args.checkpoint, device=device)
        dataset = args.dataset or metadata.get("dataset")
        data = _evaluation_data(args, dataset, what)
        expected = tuple(metadata.get("input_shape") or ())
        shape = tuple(data.images.shape[1:])
        if expected and shape != expected:
            raise ValueError(f"{what} takes inputs of shape {expected} but {data.info.name} has {shape}")
    else:
        data = _evaluation_data(args, args.dataset, what)
        model, metadata = _external_model(args, data, device)
    data = ImageDataset(data.images.to(device), data.labels.to(device), data.info)
    user_file = getattr(args, "data", None) is not None
    if not checkpoint or user_file or getattr(args, "num_classes", None) is not None:
        width = check_model_on_data(model, data, getattr(args, "num_classes", None), what, labels_only=user_file)
        if user_file and width != data.info.num_classes:
            names = tuple(str(index) for index in range(width))
            data = ImageDataset(data.images, data.labels, replace(data.info, num_classes=width, class_names=names))
    shape = tuple(data.images.shape[1:])
    if not checkpoint:
        metadata.update(dataset=data.info.name, input_shape=list(shape), num_classes=data.info.num_classes)
        args.checkpoint = what
    return model, metadata, data
