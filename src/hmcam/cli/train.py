"""``hmcam train``: every option generated from :class:`~hmcam.training.TrainConfig` and the methods.

Each configuration field is a flag (``--train-limit 512``, ``--no-channels-last``); each keyword
argument of a registered training method is one too (``--eps``, ``--steps``), collected into
``method_kwargs``. ``--config`` reads a JSON object of fields, which flags override. ``--resume``
reads the run's saved ``config.json``, so ``hmcam train --out RUN --resume`` is enough; a flag that
contradicts the saved run is an error that names it.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hmcam.cli.common import check_output_folder

#: Short help for the fields whose meaning is not plain from their name; defaults are appended.
FIELD_HELP = {
    "dataset": "training set",
    "model": "architecture; see `hmcam models`",
    "model_options": "the architecture's own options as a JSON object, e.g. '{\"dropout\": 0.0}'",
    "method": "training method",
    "method_kwargs": "the method's arguments as a JSON object (the method flags below are simpler)",
    "batch_size": "global batch, split over torchrun processes",
    "milestones": "multistep LR decay points: fractions of the run (0.5) or epochs (79 90 100)",
    "gamma": "multistep LR decay factor",
    "cyclic_peak": "fraction of the run where the cyclic schedule peaks",
    "deterministic": "ask torch for deterministic kernels",
    "data_root": "folder holding the dataset",
    "download": "download the dataset when it is not found",
    "train_limit": "train on the first N examples only",
    "test_limit": "evaluate on the first N test examples only",
    "eval_subset": "test examples for robust accuracy each epoch (0 skips it)",
    "eval_steps": "PGD steps of the per-epoch robust evaluation",
    "eval_eps": "eps of the per-epoch robust evaluation (default: the method's, else the dataset's)",
    "eval_alpha": "step of the per-epoch robust evaluation (default 2.5 eps / steps)",
    "out": "run folder",
    "device": "auto, cpu, cuda or cuda:N",
    "channels_last": "NHWC memory format (faster convolutions on CPUs)",
    "progress": "show progress bars",
    "warmup_epochs": "linear learning-rate warm-up, in epochs (fractions allowed)",
    "augment": "data augmentation",
    "augment_padding": "padding of the random crop",
    "sync_batchnorm": "SyncBatchNorm under torchrun",
    "workers": "worker processes decoding folder datasets (ImageNet)",
    "collapse_epochs": "epochs at chance training accuracy before a collapse is reported (0: off)",
    "collapse_margin": "how far above chance still counts as chance",
    "stop_on_collapse": "stop the run on a collapse instead of warning",
    "tensorboard": "also write the training curves for TensorBoard into OUT/tensorboard (extra: tensorboard)",
}
#: Shorter flag names people expect.
ALIASES = {"sync_batchnorm": "sync-bn"}


def _choices(name: str) -> list[str] | None:
    if name == "dataset":
        from hmcam.data import DATASETS

        return sorted(DATASETS)
    if name == "model":
        from hmcam.models import MODELS

        return sorted(MODELS)
    if name == "method":
        from hmcam.training import METHODS

        return sorted(METHODS)
    if name == "schedule":
        from hmcam.training.schedules import SCHEDULES

        return list(SCHEDULES)
    if name == "augment":
        from hmcam.training.augment import AUGMENTATIONS

        return list(AUGMENTATIONS)
    return None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _add_typed(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    dest: str,
    kind: Any,
    default: Any,
    help_text: str,
) -> None:
    """Add ``flag`` for a value of type ``kind`` (a type hint), its default shown in the help."""
    optional = False
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        members = [k for k in typing.get_args(kind) if k is not type(None)]
        optional = len(members) < len(typing.get_args(kind))
        kind = members[0]
    shown = json.dumps(list(default) if isinstance(default, tuple) else default)
    text = f"{help_text} (default: {shown})".strip()
    common: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": text}
    if kind is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
    elif typing.get_origin(kind) is tuple:
        parser.add_argument(flag, nargs="+", type=float, metavar="X", **common)
    elif typing.get_origin(kind) is dict or kind is dict:
        parser.add_argument(flag, type=_json_object, metavar="JSON", **common)
    elif kind in (int, float, str):
        convert = _optional(kind) if optional else kind
        choices = _choices(dest)
        parser.add_argument(
            flag, type=convert, choices=choices, metavar=None if choices else kind.__name__.upper(), **common
        )
    else:
        raise TypeError(f"no command-line form for {dest}: {kind}")


METHOD_HELP = {
    "eps": "perturbation radius (default: the dataset's threat model)",
    "alpha": "attack step size, or the momentum step of CAT's chains (default: 300 eps)",
    "steps": "attack steps K",
    "replays": "T (cat) or m (free): replays of each minibatch",
    "chain_steps": "K: chain steps before each replay",
    "eps_step": "the chain's step: theta += eps_step sign(v) (default: eps)",
    "rho": "weight of the previous model's term of J_cd (Eq. 15)",
    "lam": "weight of the current model's term of J_cd (Eq. 15)",
    "gradient": "J_cd logit gradient: paper (Eq. 16) or exact (gradient of Eq. 15)",
    "restart_every": "restart the chains every N epochs (0: never)",
    "amp": "mixed precision with a gradient scaler on CUDA",
    "beta": "weight of the KL term",
    "full_passes": "m: full forward-backward passes per minibatch",
    "layer_steps": "n: first-layer perturbation updates per full pass",
}


def method_arguments() -> dict[str, tuple[Any, list[str]]]:
    """Every keyword argument of the registered methods: its type hint and the methods that take it."""
    from hmcam.training import METHODS

    found: dict[str, tuple[Any, list[str]]] = {}
    for name, cls in sorted(METHODS.items()):
        hints = typing.get_type_hints(cls.__init__)
        for parameter in inspect.signature(cls.__init__).parameters.values():
            if parameter.name in ("self", "dataset") or parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
                continue
            kind, takers = found.get(parameter.name, (hints.get(parameter.name, str), []))
            found[parameter.name] = (kind, [*takers, name])
    return found


def _method_flag(name: str) -> str:
    from hmcam.training import TrainConfig

    clashes = {field.name for field in dataclasses.fields(TrainConfig)}
    return "--" + ("method-" + name if name in clashes else name).replace("_", "-")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train`` subcommand, one flag per configuration field and per method argument."""
    from hmcam.training import TrainConfig

    parser = commands.add_parser(
        "train",
        help="train a model (natural or adversarial)",
        description="Train a model; every TrainConfig field is a flag. Resume with: hmcam train --out RUN --resume",
    )
    parser.add_argument("--config", metavar="FILE", help="a JSON file of configuration fields, which flags override")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out with its saved configuration")
    defaults = TrainConfig().to_dict()
    hints = typing.get_type_hints(TrainConfig)
    fields = parser.add_argument_group("configuration")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + ALIASES.get(field.name, field.name.replace("_", "-"))
        _add_typed(fields, flag, field.name, hints[field.name], defaults[field.name], FIELD_HELP.get(field.name, ""))
    arguments = parser.add_argument_group("method arguments (collected into method_kwargs)")
    for name, (kind, takers) in method_arguments().items():
        _add_typed(
            arguments,
            _method_flag(name),
            f"method:{name}",
            kind,
            None,
            f"{METHOD_HELP.get(name, name)}; for {', '.join(takers)}",
        )
    parser.set_defaults(run=run)


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({what}): {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object ({what}), got {type(value).__name__}")
    return value


def training_config(args: argparse.Namespace) -> tuple[Any, bool]:
    """The :class:`~hmcam.training.TrainConfig` and resume flag that the parsed flags describe."""
    from hmcam.reporting.run_folder import CONFIG_FILE
    from hmcam.training import TrainConfig
    from hmcam.training.config import RESUMABLE_CHANGES

    given = {k: v for k, v in vars(args).items() if k not in ("command", "run", "config", "resume", "traceback")}
    method_given = {k.split(":", 1)[1]: given.pop(k) for k in list(given) if k.startswith("method:")}
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(_read_json_object(Path(args.config), "--config"))
    values.update(given)
    if method_given:
        values["method_kwargs"] = {**values.get("method_kwargs", {}), **method_given}
    saved_file = Path(values.get("out", TrainConfig.out)) / CONFIG_FILE
    if args.resume and saved_file.is_file():
        saved = _read_json_object(saved_file, "the saved run")
        if not isinstance(saved.get("config"), dict):
            raise ValueError(f"{saved_file} has no 'config' object; it was not written by hmcam train")
        saved_values = TrainConfig.from_dict(saved["config"]).to_dict()
        for name, value in values.items():
            if name in RESUMABLE_CHANGES:
                continue
            mine = TrainConfig.from_dict({**saved_values, name: value}).to_dict()[name]
            if mine != saved_values.get(name):
                flag = "--" + ALIASES.get(name, name.replace("_", "-"))
                raise ValueError(
                    f"{flag} {json.dumps(mine)} contradicts the run in {saved_file.parent} "
                    f"({name} = {json.dumps(saved_values.get(name))}); drop the flag to resume it"
                )
        values = {**saved_values, **{k: v for k, v in values.items() if k in RESUMABLE_CHANGES}}
    return TrainConfig.from_dict(values), args.resume


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) the run; returns the run summary."""
    from hmcam.training import build_method, train
    from hmcam.training.tensorboard import require_tensorboard

    config, resume = training_config(args)
    check_output_folder(config.out)
    if config.tensorboard:  # before any data is fetched: the extra is installed
        require_tensorboard()
    # The method checks its hyper-parameters (eps, steps, replays) before any data is fetched or file written.
    build_method(config.method, dataset=config.dataset, **config.method_kwargs)
    return train(config, resume=resume)
