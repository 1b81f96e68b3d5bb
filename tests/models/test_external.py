"""Models from a user's code, TorchScript and torch.export files, and weights from safetensors or state dicts."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from hmcam.models import MissingDependencyError, Normalize
from hmcam.models.external import (
    WeightsError,
    build_from_spec,
    load_compiled_model,
    load_external_model,
    load_state_dict_file,
    model_file_kind,
)

CODE = """
from torch import nn
from helper import WIDTH  # a neighbour of the file: its folder is importable while it runs


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 3))


def not_a_model():
    return 42
"""


@pytest.fixture
def code_file(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text("WIDTH = 5\n")
    path = tmp_path / "net.py"
    path.write_text(CODE)
    return path


def reference() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).eval()


def test_a_python_file_and_a_module_build_models(code_file, monkeypatch) -> None:
    model = build_from_spec(f"{code_file}:build")
    assert [tuple(p.shape) for p in model.parameters()] == [(5, 12), (5,), (3, 5), (3,)]
    assert str(code_file.parent) not in sys.path  # the folder was importable only while the file ran
    monkeypatch.syspath_prepend(str(code_file.parent))
    assert isinstance(build_from_spec("net:build"), nn.Sequential)
    with pytest.raises(TypeError, match="returned a int, not a torch.nn.Module"):
        build_from_spec(f"{code_file}:not_a_model")
    with pytest.raises(ValueError, match="has no 'missing'"):
        build_from_spec(f"{code_file}:missing")
    with pytest.raises(FileNotFoundError, match="no Python file"):
        build_from_spec(f"{code_file.parent / 'absent.py'}:build")
    with pytest.raises(ValueError, match="is not FILE.py:FUNCTION"):
        build_from_spec("just-a-name")


def test_weights_are_unwrapped_stripped_and_checked(code_file, tmp_path) -> None:
    expected = reference()
    state = expected.state_dict()
    x = torch.rand(4, 3, 2, 2)
    for index, saved in enumerate(
        [
            state,
            {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 7},
            {"model_state_dict": {f"_orig_mod.{k}": v for k, v in state.items()}, "optimizer": {"lr": 0.1}},
            {"model": {"state_dict": state}},
        ]
    ):
        path = tmp_path / f"w{index}.pt"
        torch.save(saved, path)
        model, metadata = load_external_model(f"{code_file}:build", path)
        assert metadata["kind"] == "code" and metadata["weights"] == str(path)
        assert torch.equal(model(x), expected(x))
    save_file(state, str(tmp_path / "w.safetensors"))
    model, _ = load_external_model(f"{code_file}:build", tmp_path / "w.safetensors")
    assert torch.equal(model(x), expected(x))
    wrong = {("head." + k if k.startswith("3.") else k): v for k, v in state.items()}
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(WeightsError) as error:
        load_external_model(f"{code_file}:build", tmp_path / "wrong.pt")
    message = str(error.value)
    assert (
        "2 missing keys (3.bias, 3.weight)" in message and "2 unexpected keys (head.3.bias, head.3.weight)" in message
    )
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "nothing.pt")
    with pytest.raises(WeightsError, match="has no state_dict/model_state_dict/model key"):
        load_state_dict_file(tmp_path / "nothing.pt")


class Pickled:
    """An arbitrary object: weights-only loading must refuse it, never run its code."""


def test_weights_files_never_unpickle_objects(tmp_path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Pickled()}, tmp_path / "objects.pt")
    with pytest.raises(WeightsError, match="weights only, no pickled objects"):
        load_state_dict_file(tmp_path / "objects.pt")


def test_torchscript_and_export_files_are_told_apart_by_content(tmp_path) -> None:
    model = reference()
    x = torch.rand(3, 3, 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(tmp_path / "scripted.bin"))
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "exported.bin"))  # no telling suffix: the content decides
    torch.save(model.state_dict(), tmp_path / "weights.bin")
    save_file(model.state_dict(), str(tmp_path / "weights.safetensors"))
    kinds = {name: model_file_kind(tmp_path / name) for name in ("scripted.bin", "exported.bin", "weights.bin")}
    assert kinds == {"scripted.bin": "torchscript", "exported.bin": "export", "weights.bin": "state_dict"}
    assert model_file_kind(tmp_path / "weights.safetensors") == "safetensors"
    for name in ("scripted.bin", "exported.bin"):
        loaded, metadata = load_external_model(str(tmp_path / name), mean=[0.5], std=[0.25], in_channels=3)
        assert isinstance(loaded, Normalize) and not loaded.training
        assert metadata["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
        assert torch.allclose(loaded(x), model((x - 0.5) / 0.25))
        with pytest.raises(WeightsError, match="not weights"):
            load_state_dict_file(tmp_path / name)
    with pytest.raises(ValueError, match="holds weights, not a model"):
        load_compiled_model(tmp_path / "weights.bin")


@pytest.mark.parametrize(("package", "extra"), [("torchvision", "vision"), ("timm", "timm")])
def test_the_optional_extras(package, extra) -> None:
    try:
        importable = importlib.util.find_spec(package) is not None and bool(importlib.import_module(package))
    except Exception:  # installed but broken (a torchvision built for another torch)
        importable = False
    if not importable:
        with pytest.raises(MissingDependencyError, match=rf"pip install 'hmcam\[{extra}\]'"):
            build_from_spec(f"{package}:resnet18", num_classes=10)
        pytest.skip(f"{package} is not importable here: only its one-line error was tested")
    model = build_from_spec(f"{package}:resnet18", num_classes=7, in_channels=3)
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="has no model"):
        build_from_spec(f"{package}:no_such_network")
