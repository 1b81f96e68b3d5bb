"""Invariants every attack keeps, checked over random small models, shapes, norms and eps."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hmcam.attacks import ATTACKS, CW, HMC, HMCAM, PGD, get_norm

FAST = {
    "fgsm": {},
    "ifgsm": {"steps": 3},
    "pgd": {"steps": 3, "restarts": 2},
    "mifgsm": {"steps": 3},
    "mpgd": {"steps": 3},
    "aifgsm": {"steps": 3},
    "hmcam": {"steps": 2, "samples": 2},
    "hmc": {"steps": 2, "samples": 2},
    "cwlinf": {"steps": 3},
    "daa": {"steps": 3},
}
NORMED = sorted(FAST)


def build(name: str, model, eps, norm: str, seed: int = 0, **extra):
    return ATTACKS[name](model, eps, norm=norm, seed=seed, **FAST[name], **extra)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(NORMED),
    norm=st.sampled_from(["linf", "l2", "l1"]),
    eps=st.floats(0.01, 0.5),
    batch=st.integers(1, 5),
    channels=st.integers(1, 2),
    seed=st.integers(0, 1000),
    targeted=st.booleans(),
)
def test_attack_invariants(tiny_net_factory, name, norm, eps, batch, channels, seed, targeted) -> None:
    model = tiny_net_factory(seed, channels=channels)
    model.head[2].weight.requires_grad_(False)  # a frozen layer must stay frozen
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, 6, 6, generator=generator)
    y = torch.randint(0, 4, (batch,), generator=generator)
    original = x.clone()
    attack = build(name, model, eps, norm, seed=seed, targeted=targeted)
    with torch.no_grad():  # attacks must work when the caller disabled gradients
        adversarial = attack(x, y)
    assert torch.equal(x, original), "the caller's input was modified"
    assert adversarial.shape == x.shape and adversarial.dtype == x.dtype and not adversarial.requires_grad
    assert (adversarial >= 0).all() and (adversarial <= 1).all()
    assert (get_norm(norm).measure(adversarial - x) <= eps * (1 + 1e-5) + 1e-6).all()
    assert all(module.training for module in model.modules()), "train mode was not restored"
    assert not model.head[2].weight.requires_grad and model.features[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters()), "an attack left .grad on a parameter"
    torch.testing.assert_close(attack(x, y), adversarial)  # deterministic under a seed


@pytest.mark.parametrize("name", NORMED)
def test_model_state_is_restored_after_an_exception(tiny_net_factory, name) -> None:
    model = tiny_net_factory()
    calls = {"n": 0}

    def explode(module, inputs, output):
        calls["n"] += 1
        if calls["n"] > 1:  # let the input check pass, fail inside the attack loop
            raise RuntimeError("boom")

    handle = model.head.register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        build(name, model, 0.1, "linf")(torch.rand(2, 1, 6, 6), torch.tensor([0, 1]))
    handle.remove()
    assert all(module.training for module in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_cw_keeps_bounds_and_hygiene(tiny_net_factory) -> None:
    model = tiny_net_factory()
    x = torch.rand(3, 1, 6, 6)
    adversarial = CW(model, steps=20, binary_search_steps=2)(x, torch.tensor([0, 1, 2]))
    assert (adversarial >= 0).all() and (adversarial <= 1).all()
    assert all(module.training for module in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_float64_input_stays_float64(tiny_net_factory) -> None:
    model = tiny_net_factory().double()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    assert PGD(model, 0.1, steps=2)(x, torch.tensor([0, 1])).dtype == torch.float64


def test_sequence_samples_are_real_copies(tiny_net_factory) -> None:
    model = tiny_net_factory()
    x = torch.rand(2, 1, 6, 6)
    for attack in (HMCAM(model, 0.2, steps=2, samples=3, seed=0), HMC(model, 0.2, steps=2, samples=3, seed=0)):
        result = attack.sample(x, torch.tensor([0, 1]))
        assert result.samples.shape == (3, 2, 1, 6, 6)
        pointers = {result.samples[s].data_ptr() for s in range(3)}
        assert len(pointers) == 3
        result.samples[0].zero_()
        assert result.samples[1].abs().sum() > 0  # no aliasing between entries
        assert ((result.acceptance_probability >= 0) & (result.acceptance_probability <= 1)).all()


def test_per_example_eps_equals_scalar_eps(tiny_net_factory) -> None:
    model = tiny_net_factory().eval()
    x = torch.rand(4, 1, 6, 6)
    y = torch.tensor([0, 1, 2, 3])
    scalar = PGD(model, 0.1, steps=3, seed=3)(x, y)
    tensor = PGD(model, torch.full((4,), 0.1), steps=3, seed=3)(x, y)
    torch.testing.assert_close(scalar, tensor)
    mixed = PGD(model, torch.tensor([0.05, 0.1, 0.2, 0.3]), steps=3, seed=3)(x, y)
    torch.testing.assert_close(
        (mixed - x).abs().flatten(1).amax(1), torch.tensor([0.05, 0.1, 0.2, 0.3]), atol=1e-6, rtol=0
    )


def test_hmcam_with_infinite_temperature_accepts_everything(tiny_net_factory) -> None:
    result = HMCAM(tiny_net_factory().eval(), 0.1, steps=2, samples=3, temperature=math.inf, seed=0).sample(
        torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 2])
    )
    assert result.accepted.all()
