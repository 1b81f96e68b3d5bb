"""The ``hmcam`` command line: train, eval, attack, models, datasets and the demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the subcommands import what they need when they run, to keep `hmcam --help` fast
    from torch import nn

    from hmcam.data import ImageDataset
    from hmcam.experiments.attack_run import AttackSettings

METHOD_FLAGS = ("eps", "alpha", "steps")


def _add_data(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--dataset", required=required, help="mnist, fashion-mnist, cifar10, cifar100 or imagenet")
    parser.add_argument(
        "--data-root", help="folder holding the dataset (else $HMCAM_DATA, ~/.cache/hmcam, system places)"
    )


def _add_attack(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--attack", default=default, help=f"attack name (default {default}); see `hmcam attacks`")
    parser.add_argument("--eps", type=float, default=0.1, help="radius of the threat model's ball (default 0.1)")
    parser.add_argument("--alpha", type=float, help="step size (default: the attack's own rule)")
    parser.add_argument("--steps", type=int, default=10, help="T: gradient steps (per transition for chains)")
    parser.add_argument("--samples", type=int, default=1, help="S: chain transitions for hmcam and hmc")
    parser.add_argument("--norm", default="linf", choices=("linf", "l2", "l1"))
    parser.add_argument("--targeted", action="store_true", help="aim at class (label + 1) mod classes")
    parser.add_argument("--limit", type=int, default=1000, help="number of test images (default 1000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per task."""
    parser = argparse.ArgumentParser(
        prog="hmcam", description="Probabilistic adversarial attack and learning (HMCAM, CAT)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model (natural or adversarial)")
    _add_data(train)
    train.add_argument("--model", default="smallcnn", help="architecture name; see `hmcam models`")
    train.add_argument("--method", default="natural", help="training method: natural, pgd, ...")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--schedule", default="multistep", choices=("multistep", "cosine", "cyclic"))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train-limit", type=int, help="train on the first N examples only")
    train.add_argument("--test-limit", type=int, help="evaluate on the first N test examples only")
    train.add_argument("--eval-subset", type=int, default=1000, help="test examples for robust accuracy each epoch")
    train.add_argument("--eps", type=float, help="adversarial methods: radius of the L-inf ball")
    train.add_argument("--alpha", type=float, help="adversarial methods: step size")
    train.add_argument("--steps", type=int, help="adversarial methods: steps K")
    train.add_argument("--deterministic", action="store_true", help="deterministic kernels")
    train.add_argument("--device", default="auto")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")

    evaluate = commands.add_parser("eval", help="clean and robust accuracy of a checkpoint")
    evaluate.add_argument("checkpoint")
    _add_data(evaluate)
    _add_attack(evaluate, "pgd")
    evaluate.add_argument("--out", help="also write the result as JSON to this file")

    attack = commands.add_parser("attack", help="attack a checkpoint and write examples, summary and figures")
    attack.add_argument("checkpoint")
    _add_data(attack)
    _add_attack(attack, "hmcam")
    attack.add_argument("--out", required=True, help="output folder")

    commands.add_parser("models", help="list the architectures")
    commands.add_parser("attacks", help="list the attacks")
    datasets = commands.add_parser("datasets", help="list the datasets and where their files were found")
    datasets.add_argument("--data-root")

    demo = commands.add_parser("demo", help="the embedded demo on Fashion-MNIST")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--examples", type=int, default=1000)
    demo.add_argument("--epochs", type=int, default=2)
    demo.add_argument("--data-root")
    return parser


def _settings(args: argparse.Namespace) -> AttackSettings:
    from hmcam.experiments.attack_run import AttackSettings

    return AttackSettings(
        args.attack.lower(),
        eps=args.eps,
        steps=args.steps,
        samples=args.samples,
        alpha=args.alpha,
        norm=args.norm,
        targeted=args.targeted,
        seed=args.seed,
    )


def _checkpoint_data(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any], ImageDataset]:
    from hmcam.data import ImageDataset, load_dataset
    from hmcam.models import load_checkpoint

    model, metadata = load_checkpoint(args.checkpoint)
    dataset = args.dataset or metadata.get("dataset")
    if not dataset:
        raise ValueError(f"{args.checkpoint} does not name its dataset; pass --dataset")
    if args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    test = load_dataset(dataset, split="test", root=args.data_root, limit=args.limit)
    if not isinstance(test, ImageDataset):
        raise ValueError(f"{dataset} is decoded lazily from image files; the command line attacks in-memory datasets")
    expected = tuple(metadata.get("input_shape") or ())
    if expected and tuple(test.images.shape[1:]) != expected:
        raise ValueError(
            f"{args.checkpoint} takes inputs of shape {expected} but {dataset} has {tuple(test.images.shape[1:])}"
        )
    return model, metadata, test


def command_train(args: argparse.Namespace) -> dict[str, Any]:
    """``hmcam train``: train a model into ``--out``; returns the run summary."""
    from hmcam.training import TrainConfig, train

    method_kwargs = {name: getattr(args, name) for name in METHOD_FLAGS if getattr(args, name) is not None}
    config = TrainConfig(
        dataset=args.dataset or "fashion-mnist",
        model=args.model,
        method=args.method,
        method_kwargs=method_kwargs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        seed=args.seed,
        deterministic=args.deterministic,
        data_root=args.data_root,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        eval_subset=args.eval_subset,
        out=args.out,
        device=args.device,
    )
    return train(config, resume=args.resume)


def command_eval(args: argparse.Namespace) -> dict[str, Any]:
    """``hmcam eval``: clean and robust accuracy of a checkpoint under one attack."""
    from hmcam.experiments.attack_run import run_attack
    from hmcam.storage import atomic_write_json

    model, _, test = _checkpoint_data(args)
    summary = run_attack(model, _settings(args), test.images, test.labels, batch_size=args.batch_size).summary
    result = {"checkpoint": args.checkpoint, **summary}
    if args.out:
        atomic_write_json(args.out, result)
    return result


def command_attack(args: argparse.Namespace) -> dict[str, Any]:
    """``hmcam attack``: attack a checkpoint; write the examples, a summary and a grid into ``--out``."""
    from hmcam.evaluation import predict
    from hmcam.experiments.attack_run import run_attack
    from hmcam.reporting.figures import first_changed, save_adversarial_grid
    from hmcam.storage import atomic_write_json, save_tensors

    model, metadata, test = _checkpoint_data(args)
    settings = _settings(args)
    run = run_attack(model, settings, test.images, test.labels, batch_size=args.batch_size)
    out = Path(args.out)
    tensors = {"adversarial": run.adversarial, "labels": test.labels}
    if run.samples is not None:
        tensors["samples"] = run.samples
    save_tensors(out / "adversarial.safetensors", tensors, {"checkpoint": args.checkpoint, **run.summary})
    atomic_write_json(out / "summary.json", {"checkpoint": args.checkpoint, **run.summary})
    clean_prediction = predict(model, test.images)
    adversarial_prediction = predict(model, run.adversarial)
    shown = first_changed(clean_prediction, adversarial_prediction, 8)
    save_adversarial_grid(
        out / "grid.png",
        test.images[shown],
        run.adversarial[shown],
        clean_prediction[shown],
        adversarial_prediction[shown],
        test.info.class_names or [str(i) for i in range(1000)],
        f"{settings.name}, {settings.norm} eps = {settings.eps}",
    )
    return {"out": str(out), "files": ["adversarial.safetensors", "summary.json", "grid.png"], **run.summary}


def command_models(args: argparse.Namespace) -> dict[str, Any]:
    """``hmcam models``: every architecture with its family, input shape and published size."""
    from hmcam.models import MODELS

    return {
        name: {"family": spec.family, "input_shape": list(spec.input_shape), "published_params": spec.published_params}
        for name, spec in MODELS.items()
    }


def command_attacks(args: argparse.Namespace) -> dict[str, Any]:
    """``hmcam attacks``: every attack name with the first line of its docstring."""
    from hmcam.attacks import ATTACKS

    return {name: (klass.__doc__ or "").strip().splitlines()[0] for name, klass in ATTACKS.items()}


def command_datasets(args: argparse.Namespace) -> dict[str, Any]:
    """``hmcam datasets``: every dataset with its shape, classes and the folder it was found in."""
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


def command_demo(args: argparse.Namespace) -> str:
    """``hmcam demo``: train the demo model, run the demo attacks and write the report."""
    from hmcam.experiments.demo import main_summary, run_demo

    return main_summary(run_demo(args.out, examples=args.examples, epochs=args.epochs, data_root=args.data_root))


COMMANDS = {
    "train": command_train,
    "eval": command_eval,
    "attack": command_attack,
    "models": command_models,
    "attacks": command_attacks,
    "datasets": command_datasets,
    "demo": command_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; print its result (JSON unless it is text) and return the exit status."""
    args = build_parser().parse_args(argv)
    from hmcam.data import DatasetNotFoundError
    from hmcam.models import CheckpointError

    try:
        result = COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, DatasetNotFoundError, CheckpointError) as error:
        print(f"hmcam {args.command}: error: {error}", file=sys.stderr)
        return 2
    # Under torchrun every process runs the command; one report is enough.
    if os.environ.get("RANK", "0") == "0":
        print(result if isinstance(result, str) else json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
