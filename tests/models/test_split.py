"""Splitting every network of the zoo after its first layer: rest(first(x)) is model(x), gradients flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmcam.models import MODELS, MissingDependencyError, build_model, split_first_layer

# The smallest input each network takes (global average pooling lets most run below 32x32; VGG's
# five pools need 32), which keeps the wide networks to a fraction of a second.
SIZES = {"vgg16": 32, "resnet50": 64, "resnet152": 64}
FIRST_LAYERS = {"mlp": "model.layers.0", "smallcnn": "model.features.0", "lenet": "model.features.0"}


def _built(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    spec = MODELS[name]
    channels = spec.input_shape[0]
    size = spec.input_shape[1] if spec.family == "mnist" else SIZES.get(name, 16)
    torch.manual_seed(0)
    try:
        model = build_model(name, mean=[0.4] * channels, std=[0.3] * channels)
    except MissingDependencyError:
        pytest.skip("torchvision is not installed")
    return model, (channels, size, size)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_rest_of_first_is_the_model_and_gradients_reach_every_parameter(name: str) -> None:
    model, shape = _built(name)
    model.eval()  # dropout off, so the two forward passes compare exactly
    split = split_first_layer(model, shape)
    if name in FIRST_LAYERS:
        assert split.layer_name == FIRST_LAYERS[name]
    assert split.first_parameters() and split.rest_parameters()
    assert len(split.first_parameters()) + len(split.rest_parameters()) == len(list(model.parameters()))

    x = torch.rand(2, *shape, requires_grad=True)
    expected = model(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)

    h = split.first(x)
    assert h.requires_grad and h.shape[0] == 2
    found = split.rest(h)
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)
    found.square().sum().backward()
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-4, atol=1e-6)
    assert all(p.grad is not None for p in model.parameters())
    # The first layer's parameters learn only through h: rest() discards the zero-input pass.
    model.zero_grad(set_to_none=True)
    leaf = h.detach().requires_grad_()
    split.rest(leaf).square().sum().backward()
    assert all(p.grad is None for p in split.first_parameters())
    assert all(p.grad is not None for p in split.rest_parameters())
    # capture() sees the same gradient at the first layer's output during an ordinary forward pass,
    # also where an in-place ReLU follows the layer (VGG).
    with split.capture() as captured:
        model(x.detach()).square().sum().backward()
    torch.testing.assert_close(captured.value.grad, leaf.grad, rtol=1e-4, atol=1e-6)


def test_capture_records_the_first_layer_output_and_its_gradient() -> None:
    torch.manual_seed(1)
    model = build_model("smallcnn", mean=[0.5], std=[0.25]).eval()
    split = split_first_layer(model, (1, 28, 28))
    x = torch.rand(3, 1, 28, 28)
    with split.capture() as captured:
        model(x).logsumexp(dim=1).sum().backward()
    assert len(captured.outputs) == 1 and captured.value is not None
    h = split.first(x).detach().requires_grad_()
    split.rest(h).logsumexp(dim=1).sum().backward()
    torch.testing.assert_close(captured.value.grad, h.grad)
    # Outside the block nothing is recorded any more.
    model(x)
    assert len(captured.outputs) == 1


def test_an_explicit_layer_and_bad_requests() -> None:
    torch.manual_seed(2)
    model = build_model("smallcnn", mean=[0.5], std=[0.25]).eval()
    # YOPO's code takes SmallCNN's conv1 + ReLU as the first layer.
    split = split_first_layer(model, (1, 28, 28), layer="model.features.1")
    x = torch.rand(2, 1, 28, 28)
    h = split.first(x)
    assert h.min() >= 0
    torch.testing.assert_close(split.rest(h), model(x))
    with pytest.raises(ValueError, match="no sub-module named 'nope'"):
        split_first_layer(model, (1, 28, 28), layer="nope")
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        split_first_layer(model, (28, 28))
    with pytest.raises(ValueError, match="outputs"):
        split.rest(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="no first layer"):
        split_first_layer(nn.Flatten(), (1, 2, 2))


def test_finding_the_layer_changes_no_state() -> None:
    torch.manual_seed(3)
    model = build_model("resnet32", mean=[0.5] * 3, std=[0.25] * 3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    split_first_layer(model, (3, 16, 16))
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
