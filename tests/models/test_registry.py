"""Tests for the model zoo registry and build_model: names, shapes, normalization inside, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmcam.models import MODELS, ModelSpec, Normalize, build_model, get_spec

CHEAP = ["resnet32", "vgg16", "densenet121", "preact_resnet18", "smallcnn", "lenet", "mlp"]


def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter off its initialization (some layers start at exactly zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def test_registry_holds_exactly_the_papers_networks():
    assert sorted(MODELS) == sorted(
        [
            "resnet32",
            "vgg16",
            "resnext29_8x64d",
            "densenet121",
            "preact_resnet18",
            "wrn34_10",
            "smallcnn",
            "lenet",
            "mlp",
            "resnet50",
            "resnet152",
        ]
    )
    for name, spec in MODELS.items():
        assert isinstance(spec, ModelSpec) and spec.name == name and spec.reference
    families = {name: spec.family for name, spec in MODELS.items()}
    assert [n for n, f in families.items() if f == "mnist"] == ["smallcnn", "lenet", "mlp"]
    assert [n for n, f in families.items() if f == "imagenet"] == ["resnet50", "resnet152"]
    shapes = {"cifar": (3, 32, 32), "mnist": (1, 28, 28), "imagenet": (3, 224, 224)}
    assert all(spec.input_shape == shapes[spec.family] for spec in MODELS.values())
    assert MODELS["resnet50"].default_classes == 1000 and MODELS["resnet32"].default_classes == 10


def test_options_are_the_builders_extra_keywords():
    assert MODELS["smallcnn"].options == ("dropout",)
    assert MODELS["wrn34_10"].options == ("dropout",)
    assert MODELS["mlp"].options == ("hidden",)
    assert MODELS["resnet32"].options == ()


@pytest.mark.parametrize("name", CHEAP)
def test_forward_gives_one_logit_per_class_on_the_family_input(name):
    torch.manual_seed(0)
    spec = MODELS[name]
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, *spec.input_shape))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", CHEAP)
def test_normalization_is_inside_the_model(name):
    """build_model(..., mean, std)(x) == raw_net((x - mean) / std).

    The mean and std are far from identity, so a wrapper that skipped or mis-applied the
    normalization would give visibly different logits.
    """
    torch.manual_seed(1)
    spec = MODELS[name]
    channels = spec.input_shape[0]
    mean = [0.2, 0.5, 0.7][:channels]
    std = [0.3, 0.25, 0.4][:channels]
    model = perturb(build_model(name, num_classes=5, mean=mean, std=std))
    assert isinstance(model, Normalize)
    raw = model.model
    x = torch.rand(1, *spec.input_shape)
    normalized = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), raw(normalized), rtol=1e-5, atol=1e-5)


def test_without_mean_and_std_the_raw_network_is_returned():
    model = build_model("lenet")
    assert not isinstance(model, Normalize)
    assert type(model).__name__ == "LeNet5"


def test_in_channels_is_configurable_for_cifar_networks_and_sets_the_stem():
    torch.manual_seed(0)
    model = build_model("resnet32", num_classes=10, in_channels=1, mean=(0.2860,), std=(0.3530,)).eval()
    assert model.model.conv1.weight.shape == (16, 1, 3, 3)
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)
        # Global average pooling lets the CIFAR ResNet take Fashion-MNIST's 28x28 images directly.
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet32", "resnext29_8x64d"])
def test_parameter_count_matches_the_published_figure_within_one_percent(name):
    spec = MODELS[name]
    with torch.device("meta"):
        model = build_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - spec.published_params) / spec.published_params < 0.01


def test_normalize_buffers_hold_the_given_statistics():
    model = build_model("smallcnn", mean=(0.2860,), std=(0.3530,))
    assert model.mean.flatten().tolist() == pytest.approx([0.2860])
    assert model.std.flatten().tolist() == pytest.approx([0.3530])


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown architecture 'resnet33'.*resnet32"):
        build_model("resnet33")
    with pytest.raises(TypeError, match="must be a string"):
        get_spec(32)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mean": (0.5,)}, ValueError, "both mean and std"),
        ({"std": (0.5,)}, ValueError, "both mean and std"),
        ({"mean": (0.5, 0.5), "std": (0.5, 0.5)}, ValueError, "2 values but the model has 1 input channels"),
        ({"mean": (0.5,), "std": (0.0,)}, ValueError, "std must be positive"),
        ({"mean": (float("nan"),), "std": (0.5,)}, ValueError, "finite"),
        ({"mean": "0.5", "std": (0.5,)}, TypeError, "sequence"),
        ({"num_classes": 1}, ValueError, "num_classes must be >= 2"),
        ({"num_classes": 10.0}, TypeError, "num_classes must be an integer"),
        ({"num_classes": True}, TypeError, "num_classes must be an integer"),
        ({"in_channels": 0}, ValueError, "in_channels must be >= 1"),
        ({"width": 3}, TypeError, r"'smallcnn' takes no option\(s\) \['width'\]; it accepts \['dropout'\]"),
        ({"dropout": 1.0}, ValueError, "dropout must be in"),
    ],
)
def test_bad_build_arguments_are_rejected_with_a_clear_message(kwargs, error, message):
    with pytest.raises(error, match=message):
        build_model("smallcnn", **kwargs)
