"""Tests for the torchvision-backed ImageNet ResNets and their optional-dependency error."""

from __future__ import annotations

import importlib.abc
import sys

import pytest
import torch

from hmcam.models import MODELS, MissingDependencyError, build_model


class BrokenTorchvision(importlib.abc.MetaPathFinder):
    """Makes ``import torchvision`` fail the way a torchvision built for another torch does."""

    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError("operator torchvision::nms does not exist")
        return None


def hide_torchvision(monkeypatch) -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("name", ["resnet50", "resnet152"])
def test_missing_torchvision_raises_an_import_error_naming_the_extra(monkeypatch, name):
    hide_torchvision(monkeypatch)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes the import raise ModuleNotFoundError
    with pytest.raises(MissingDependencyError, match=r"not installed.*pip install 'hmcam\[vision\]'") as info:
        build_model(name)
    assert isinstance(info.value, ImportError)


def test_broken_torchvision_install_is_reported_with_the_cause(monkeypatch):
    hide_torchvision(monkeypatch)
    monkeypatch.setattr(sys, "meta_path", [BrokenTorchvision(), *sys.meta_path])
    with pytest.raises(MissingDependencyError, match=r"could not be imported.*torchvision::nms.*hmcam\[vision\]"):
        build_model("resnet50")


@pytest.mark.parametrize("name", ["resnet50", "resnet152"])
def test_parameter_count_equals_torchvisions_published_figure(name):
    try:
        with torch.device("meta"):
            model = build_model(name)
    except MissingDependencyError as error:
        pytest.skip(f"torchvision unavailable: {error}")
    assert sum(p.numel() for p in model.parameters()) == MODELS[name].published_params
