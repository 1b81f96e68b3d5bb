"""Bad input fails before any work with an error that names the problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmcam.attacks import ATTACKS, CW, HMCAM, PGD, get_attack


@pytest.fixture
def model(tiny_net_factory):
    return tiny_net_factory()


X = torch.rand(2, 1, 6, 6)
Y = torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (X.to(torch.int64), Y, "floating-point"),
        (torch.rand(6), Y, "batch dimension"),
        (X, torch.tensor([0, 1, 2]), "one entry per example"),
        (X, torch.tensor(1), "one entry per example"),
        (X, torch.tensor([0.0, 1.0]), "integer"),
        (X, torch.tensor([0, 7]), r"labels must lie in \[0, 3\]"),
        (X, torch.tensor([-1, 0]), r"labels must lie in \[0, 3\]"),
        (X * 2, Y, "outside the bounds"),
        (X - 1, Y, "outside the bounds"),
        (torch.where(X > 0.5, torch.nan, X), Y, "NaN or Inf"),
        (torch.where(X > 0.5, torch.inf, X), Y, "NaN or Inf"),
    ],
)
def test_bad_inputs(model, x, y, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        PGD(model, 0.1, steps=2)(x, y)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 0.0}, "eps must be a finite number > 0"),
        ({"eps": -0.1}, "eps must be a finite number > 0"),
        ({"eps": float("nan")}, "eps must be a finite number > 0"),
        ({"eps": "0.1"}, "eps must be a number"),
        ({"eps": 0.1, "alpha": 0.0}, "alpha must be a finite number > 0"),
        ({"eps": 0.1, "steps": 0}, "steps must be >= 1"),
        ({"eps": 0.1, "steps": 2.5}, "steps must be an integer"),
        ({"eps": 0.1, "restarts": 0}, "restarts must be >= 1"),
        ({"eps": 0.1, "norm": "l3"}, "unknown norm 'l3'"),
        ({"eps": 0.1, "loss": "hinge"}, "unknown loss 'hinge'"),
        ({"eps": 0.1, "bounds": (1.0, 0.0)}, "bounds must be"),
        ({"eps": torch.tensor([[0.1]])}, "per-example eps must be a 1-D"),
        ({"eps": torch.tensor([0.1, -0.1])}, "every per-example eps"),
    ],
)
def test_bad_parameters(model, kwargs, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        PGD(model, **kwargs)


def test_chain_parameters(model) -> None:
    with pytest.raises(ValueError, match="samples must be >= 1"):
        HMCAM(model, 0.1, samples=0)
    with pytest.raises(ValueError, match="beta1 must be a number in"):
        HMCAM(model, 0.1, beta1=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        HMCAM(model, 0.1, temperature=0)


def test_eps_larger_than_the_bounds_allow(model) -> None:
    with pytest.raises(ValueError, match="larger than the widest linf perturbation"):
        PGD(model, 1.5)(X, Y)
    with pytest.raises(ValueError, match="per-example eps has 3 entries but the batch has 2"):
        PGD(model, torch.tensor([0.1, 0.1, 0.1]))(X, Y)


def test_model_must_return_logits(model) -> None:
    class Flat(nn.Module):
        def forward(self, x):
            return x.sum(dim=(1, 2, 3))

    with pytest.raises(ValueError, match=r"\[B, classes\] logits"):
        PGD(Flat(), 0.1)(X, Y)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        PGD(lambda x: x, 0.1)


def test_targeted_attack_needs_targets(model) -> None:
    with pytest.raises(ValueError, match="target labels"):
        PGD(model, 0.1, targeted=True)(X, None)


def test_devices_must_match(model) -> None:
    class Elsewhere(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1, device="meta"))

        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="the model is on meta but the input is on cpu"):
        PGD(Elsewhere(), 0.1)(X, Y)


def test_unknown_attack_name() -> None:
    with pytest.raises(ValueError, match="unknown attack 'pgdx'"):
        get_attack("pgdx")
    assert get_attack("HMCAM") is HMCAM and set(ATTACKS) >= {"fgsm", "pgd", "hmcam", "hmc", "cw", "daa"}


def test_callable_loss_serves_embedding_models(tiny_net_factory) -> None:
    # The paper's face-recognition attack pulls a victim's features toward a target's embedding.
    torch.manual_seed(0)
    embed = nn.Sequential(nn.Flatten(), nn.Linear(36, 8))
    x = torch.rand(3, 1, 6, 6)
    target = torch.randn(3, 8)
    distance = lambda features, wanted: (features - wanted).pow(2).sum(dim=1)  # noqa: E731
    adversarial = PGD(embed, 0.1, steps=10, loss=distance, targeted=True, seed=0)(x, target)
    with torch.no_grad():
        assert (distance(embed(adversarial), target) < distance(embed(x), target)).all()


def test_cw_rejects_bad_parameters(model) -> None:
    with pytest.raises(ValueError, match="kappa must be"):
        CW(model, kappa=-1)
    with pytest.raises(ValueError, match="binary_search_steps must be >= 1"):
        CW(model, binary_search_steps=0)


def test_rounding_error_outside_the_bounds_is_tolerated(model) -> None:
    # A normalize/denormalize round trip leaves values like -2.98e-08 (torchattacks #136): accept and clip.
    x = X.clone()
    x[0, 0, 0, 0] = -2.98e-08
    adversarial = PGD(model, 0.1, steps=2, seed=0)(x, Y)
    assert adversarial.min() >= 0


@pytest.mark.parametrize("flag", ["targeted", "random_start"])
@pytest.mark.parametrize("value", ["False", "True", 0, 1])
def test_flags_must_be_real_bools(model, flag, value) -> None:
    # bool("False") is True: a flag read from text must not silently turn an attack targeted.
    with pytest.raises(TypeError, match=f"{flag} must be True or False"):
        PGD(model, 0.1, **{flag: value})


def test_cw_abort_early_must_be_a_bool(model) -> None:
    with pytest.raises(TypeError, match="abort_early must be True or False"):
        CW(model, abort_early="no")


def test_inference_mode_gives_a_clear_error(model) -> None:
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inference_mode\(\)"):
        PGD(model, 0.1, steps=2)(X, Y)
    # torch.no_grad() stays supported, and the model is restored either way.
    with torch.no_grad():
        PGD(model, 0.1, steps=2)(X, Y)
    assert all(module.training for module in model.modules())


def test_alpha_scale_is_named(model) -> None:
    with pytest.raises(ValueError, match="alpha_scale must be one of"):
        HMCAM(model, 0.1, alpha_scale="mean")
