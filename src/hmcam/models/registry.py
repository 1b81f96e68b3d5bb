"""The model zoo: every network of the paper under a fixed name, and :func:`build_model`.

``MODELS`` maps a name to a :class:`ModelSpec` that says which input the network takes, how to build
it and where it comes from. :func:`build_model` builds any of them for a number of classes and input
channels and, when a dataset mean and std are given, wraps the network in
:class:`~hmcam.models.wrappers.Normalize`, so that every built model takes pixels in [0, 1] and the
attacks' eps-balls live in pixel space (the paper's Eq. 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from torch import nn

from hmcam.core.builder import Registry, accepted_arguments, build
from hmcam.core.validate import check_int, choose
from hmcam.models.densenet import densenet121
from hmcam.models.imagenet import resnet50, resnet152
from hmcam.models.lenet import lenet
from hmcam.models.mlp import mlp
from hmcam.models.preact_resnet import preact_resnet18
from hmcam.models.resnet import resnet32
from hmcam.models.resnext import resnext29_8x64d
from hmcam.models.small_cnn import smallcnn
from hmcam.models.vgg import vgg16
from hmcam.models.wide_resnet import wrn34_10
from hmcam.models.wrappers import Normalize

FAMILIES = ("cifar", "mnist", "imagenet")

# Arguments every builder takes; anything else a builder accepts is an architecture option.
BUILD_ARGUMENTS = ("num_classes", "in_channels")


@dataclass(frozen=True)
class ModelSpec:
    """One architecture of the zoo.

    ``family`` is "cifar", "mnist" or "imagenet"; ``input_shape`` is the ``(C, H, W)`` input with the
    default channel count; ``builder(num_classes=..., in_channels=..., **options)`` returns the raw
    network (logits from normalized inputs); ``published_params`` is the parameter count that
    ``reference`` publishes for the family's default number of classes (10, or 1000 for ImageNet),
    rounded as published, or None where the reference publishes none.
    """

    name: str
    family: str
    input_shape: tuple[int, int, int]
    builder: Callable[..., nn.Module]
    published_params: int | None
    reference: str

    @property
    def default_classes(self) -> int:
        """Number of classes of the family's datasets: 1000 for ImageNet, 10 otherwise."""
        return 1000 if self.family == "imagenet" else 10

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the architecture-specific keyword options its builder accepts (e.g. dropout)."""
        return tuple(name for name in accepted_arguments(self.builder) if name not in BUILD_ARGUMENTS)


def _spec(
    name: str,
    family: str,
    builder: Callable[..., nn.Module],
    published_params: int | None,
    reference: str,
) -> ModelSpec:
    shape = {"cifar": (3, 32, 32), "mnist": (1, 28, 28), "imagenet": (3, 224, 224)}[family]
    return ModelSpec(name, family, shape, builder, published_params, reference)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "resnet32",
            "cifar",
            resnet32,
            460_000,
            "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (Table 6: 0.46M)",
        ),
        _spec(
            "vgg16",
            "cifar",
            vgg16,
            None,
            "Simonyan & Zisserman, Very Deep Convolutional Networks, ICLR 2015 (configuration D, no BN)",
        ),
        _spec(
            "resnext29_8x64d",
            "cifar",
            resnext29_8x64d,
            34_400_000,
            "Xie et al., Aggregated Residual Transformations, CVPR 2017 (Table 7: 34.4M)",
        ),
        _spec(
            "densenet121",
            "cifar",
            densenet121,
            None,
            "Huang et al., Densely Connected Convolutional Networks, CVPR 2017 (CIFAR layout of "
            "kuangliu/pytorch-cifar)",
        ),
        _spec(
            "preact_resnet18",
            "cifar",
            preact_resnet18,
            None,
            "He et al., Identity Mappings in Deep Residual Networks, ECCV 2016 (layout of YOPO)",
        ),
        _spec(
            "wrn34_10",
            "cifar",
            wrn34_10,
            None,
            "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016 (depth 34 as in Madry et al. 2018, TRADES, YOPO)",
        ),
        _spec(
            "smallcnn",
            "mnist",
            smallcnn,
            None,
            "Zhang et al., TRADES, ICML 2019 (small_cnn), as in YOPO and the paper's Table 7",
        ),
        _spec(
            "lenet",
            "mnist",
            lenet,
            None,
            "LeCun et al., Gradient-Based Learning Applied to Document Recognition, 1998 (LeNet-5 style)",
        ),
        _spec("mlp", "mnist", mlp, None, "fully connected ReLU baseline"),
        _spec(
            "resnet50",
            "imagenet",
            resnet50,
            25_557_032,
            "He et al., CVPR 2016; torchvision ResNet50_Weights.IMAGENET1K_V1 (num_params)",
        ),
        _spec(
            "resnet152",
            "imagenet",
            resnet152,
            60_192_808,
            "He et al., CVPR 2016; torchvision ResNet152_Weights.IMAGENET1K_V1 (num_params)",
        ),
    )
}


#: The builders of :data:`MODELS` for :func:`hmcam.core.builder.build`; their other keywords are options.
ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry(
    "architecture", {name: spec.builder for name, spec in MODELS.items()}, supplied=BUILD_ARGUMENTS, noun="option"
)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``; ValueError naming the known ones otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"architecture name must be a string, got {type(name).__name__}")
    return choose("architecture", name, MODELS)


def channel_statistics(values: Sequence[float], what: str, channels: int) -> tuple[float, ...]:
    """Validate a per-channel mean or std: ``channels`` finite real numbers, returned as floats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a sequence of {channels} numbers, got {values!r}")
    if len(values) != channels:
        raise ValueError(f"{what} has {len(values)} values but the model has {channels} input channels")
    given: Sequence[object] = values  # checked here, whatever the annotation promises
    if not all(not isinstance(v, bool) and isinstance(v, Real) and math.isfinite(v) for v in given):
        raise ValueError(f"{what} must hold finite numbers, got {list(values)}")
    return tuple(float(v) for v in values)


#: Limits on the hidden widths of ``mlp``: a checkpoint header is untrusted input, and an unchecked
#: ``hidden=[1] * 300000`` ran for minutes and used a gigabyte before failing.
MAX_HIDDEN_LAYERS = 32
MAX_HIDDEN_WIDTH = 65536


def _dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {value!r}")
    return float(value)


def _hidden(value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"hidden must be a list of layer widths, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_HIDDEN_LAYERS:
        raise ValueError(f"hidden must list 1 to {MAX_HIDDEN_LAYERS} layer widths, got {len(value)}")
    widths: Sequence[object] = value
    if not all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_HIDDEN_WIDTH for w in widths):
        raise ValueError(f"hidden widths must be integers in [1, {MAX_HIDDEN_WIDTH}], got {list(value)[:8]}")
    return tuple(value)


#: The schema of every architecture option: a checker that returns the value or raises naming it.
OPTION_SCHEMAS: dict[str, Callable[[Any], Any]] = {"dropout": _dropout, "hidden": _hidden}


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of architecture ``name`` checked against its schema (names, types and limits).

    An option the architecture does not take is a TypeError naming it and the ones it takes.
    """
    ARCHITECTURES.check(name, options)
    return {key: OPTION_SCHEMAS[key](value) for key, value in options.items()}


def build_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **options: Any,
) -> nn.Module:
    """Build architecture ``name`` so that it maps pixels in [0, 1] to ``num_classes`` logits.

    ``num_classes`` defaults to the family's (10, or 1000 for ImageNet) and ``in_channels`` to the
    spec's input shape (both at most 100,000, since checkpoint headers are untrusted). With
    ``mean`` and ``std`` (one value per input channel) the network is wrapped in
    :class:`Normalize`; with neither it is returned as is. ``options`` are the architecture's own
    keywords (see ``MODELS[name].options``), checked against :data:`OPTION_SCHEMAS` with limits.
    Weights are freshly initialized.
    """
    spec = get_spec(name)
    classes = check_int("num_classes", spec.default_classes if num_classes is None else num_classes, 2, 100_000)
    channels = check_int("in_channels", spec.input_shape[0] if in_channels is None else in_channels, 1, 100_000)
    checked = check_options(name, options)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std for input normalization, or neither")
    net = build(ARCHITECTURES, name, num_classes=classes, in_channels=channels, **checked)
    if mean is None or std is None:
        return net
    return Normalize(net, channel_statistics(mean, "mean", channels), channel_statistics(std, "std", channels))
