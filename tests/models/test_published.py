"""Published CIFAR architectures: state dicts written in RobustBench's layout load and compute the same logits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from hmcam.models.external import WeightsError, load_state_dict_file
from hmcam.models.published import PublishedPreActResNet18, ResNet18, load_published
from hmcam.models.wide_resnet import WideResNet


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with random BatchNorm statistics and affine terms, so that a misplaced tensor shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)
    return model.eval()


def wrn_published(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The names of hmcam's WRN, written as RobustBench's wide_resnet.py (TRADES) names them."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^block(\d)\.(\d+)\.", r"block\1.layer.\2.", key)
        key = key.replace(".shortcut.", ".convShortcut.")
        out[re.sub(r"^bn\.", "bn1.", key)] = value
    return out


def preact_published(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The names of hmcam's PreAct-ResNet, written as RobustBench's resnet.py PreActResNet names them."""
    return {re.sub(r"\.shortcut\.", ".shortcut.0.", key): value for key, value in state.items()}


def round_trip(name: str, model: nn.Module, published: dict[str, Tensor], path: Path, **kw) -> None:
    torch.save({"state_dict": {f"module.{k}": v for k, v in published.items()}}, path)
    loaded = load_published(name, load_state_dict_file(path), str(path), **kw)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("depth", [28, 34])
def test_wide_resnets_load_the_published_layout(depth, tmp_path) -> None:
    torch.manual_seed(0)
    model = randomized(WideResNet(depth, 10))
    published = wrn_published(model.state_dict())
    assert "block1.layer.0.bn1.weight" in published and "block2.layer.0.convShortcut.weight" in published
    assert "bn1.running_var" in published and "fc.weight" in published
    round_trip(f"wrn{depth}_10", model, published, tmp_path / "w.pt")


def test_wide_resnet_extras_of_published_files(tmp_path) -> None:
    model = randomized(WideResNet(28, 10))
    published = wrn_published(model.state_dict())
    published["sub_block1.layer.0.bn1.weight"] = torch.ones(16)  # some published WRNs carry an unused sub-block
    for key in [key for key in published if key.endswith("num_batches_tracked")]:
        del published[key]  # files from older PyTorch lack the counters
    round_trip("wrn28_10", model, published, tmp_path / "w.pt")
    model.fc.bias.data.zero_()  # bias_last=False: no classifier bias in the file
    published.pop("fc.bias")
    round_trip("wrn28_10", model, published, tmp_path / "nobias.pt")


def test_preact_resnet18_and_its_variants(tmp_path) -> None:
    torch.manual_seed(0)
    v1 = randomized(PublishedPreActResNet18(10, input_shortcut=True, final_bn=True))
    published = preact_published(v1.state_dict())
    assert "layer2.0.shortcut.0.weight" in published and "bn.weight" in published
    round_trip("preact_resnet18", v1, published, tmp_path / "v1.pt")
    v2 = randomized(PublishedPreActResNet18(10, input_shortcut=False, final_bn=False))
    round_trip("preact-resnet18-v2", v2, preact_published(v2.state_dict()), tmp_path / "v2.pt")
    # The published block feeds the raw input to its shortcut: loading v1 weights as v2 changes the logits.
    path = tmp_path / "swapped.pt"
    torch.save(preact_published(v2.state_dict()), path)
    loaded = load_published("preact_resnet18", load_state_dict_file(path), str(path))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(loaded(x), v2(x))


def test_resnet18_and_the_number_of_classes(tmp_path) -> None:
    torch.manual_seed(0)
    model = randomized(ResNet18(num_classes=100))
    assert (
        "layer2.0.shortcut.0.weight" in model.state_dict() and "layer2.0.shortcut.1.running_mean" in model.state_dict()
    )
    round_trip("resnet18", model, dict(model.state_dict()), tmp_path / "r.pt")  # 100 classes, read from linear.weight
    path = tmp_path / "r.pt"
    with pytest.raises(WeightsError, match=r"2 misshapen tensors \(linear.bias is \[100\], the model needs \[10\]"):
        load_published("resnet18", load_state_dict_file(path), str(path), num_classes=10)


def test_wrong_layout_and_unknown_names_are_one_line(tmp_path) -> None:
    model = WideResNet(28, 10)
    path = tmp_path / "hmcam_layout.pt"
    state = dict(model.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["block3.0.conv1.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        load_published("wrn28_10", load_state_dict_file(path), str(path))
    message = str(error.value)
    assert "\n" not in message and "1 missing keys (block3.0.conv1.weight)" in message
    assert "1 unexpected keys (extra.weight)" in message
    with pytest.raises(ValueError, match="unknown --architecture 'vit'; known: wrn28_10"):
        load_published("vit", state, "x")
