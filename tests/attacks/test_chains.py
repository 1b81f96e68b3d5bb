"""Chain attacks: a rejected proposal is reused, and memory stays flat in S when only the end is asked for."""

from __future__ import annotations

import pytest
import torch

from hmcam.attacks import HMC, HMCAM
from hmcam.attacks.chain import LastStateRecorder


def count_examples(model) -> tuple[dict[str, int], object]:
    """Count the examples that go through ``model`` with gradients on (one per example and step)."""
    seen = {"examples": 0}

    def hook(module, inputs, output):
        if torch.is_grad_enabled():
            seen["examples"] += inputs[0].shape[0]

    return seen, model.register_forward_hook(hook)


@pytest.mark.parametrize("alpha_scale", ["example", "batch"])
def test_rejected_proposals_are_reused_not_recomputed(alpha_scale, digits_correct, digits_model, monkeypatch) -> None:
    x, y = digits_correct
    x, y = x[:32], y[:32]
    # A low temperature makes rejections frequent. On the batch scale, alpha follows the whole batch's
    # size even when only a few chains are renewed.
    alpha = 0.01 if alpha_scale == "example" else 0.01 / 32
    attack = HMCAM(digits_model, 0.1, alpha, steps=3, samples=5, temperature=0.05, seed=0, alpha_scale=alpha_scale)
    seen, handle = count_examples(digits_model)
    result = attack.sample(x, y)
    reused = seen["examples"]
    monkeypatch.setattr(
        attack,
        "renew",
        lambda ball, state, y, proposal, stale, generator: attack.propose(ball, state, y, len(y), generator),
    )
    seen["examples"] = 0
    reference = attack.sample(x, y)
    recomputed = seen["examples"]
    handle.remove()
    assert not result.accepted.all(), "the test needs rejections"
    # Bit-identical where the model's kernels give a row the same bits in any batch size (this CPU);
    # other CPUs may pick other kernels for the smaller re-proposal batch, hence the float tolerance.
    torch.testing.assert_close(result.samples, reference.samples, atol=1e-6, rtol=0)
    assert torch.equal(result.accepted, reference.accepted)
    # T steps for every example at the first transition, then only for the chains that moved.
    moved = int(result.accepted[:-1].sum())
    assert recomputed == 3 * 32 * 5
    assert reused == 3 * (32 + moved)


def test_attack_call_keeps_one_state_and_equals_the_last_sample(tiny_net_factory, monkeypatch) -> None:
    model = tiny_net_factory().eval()
    x = torch.rand(3, 1, 6, 6)
    y = torch.tensor([0, 1, 2])
    for attack in (HMCAM(model, 0.2, steps=2, samples=6, seed=0), HMC(model, 0.2, steps=2, samples=6, seed=0)):
        kept = []
        original = LastStateRecorder.record

        def record(self, transition, kept=kept, original=original):
            original(self, transition)
            kept.append(self.state is transition.state and len(vars(self)) == 1)

        monkeypatch.setattr(LastStateRecorder, "record", record)
        last = attack(x, y)
        monkeypatch.setattr(LastStateRecorder, "record", original)
        assert len(kept) == 6 and all(kept)
        torch.testing.assert_close(last, attack.sample(x, y).samples[-1])


@pytest.mark.parametrize("attack_class", [HMCAM, HMC])
def test_chains_start_at_a_random_point_and_take_restarts(attack_class, tiny_net_factory) -> None:
    model = tiny_net_factory().eval()
    x = torch.rand(4, 1, 6, 6)
    y = torch.tensor([0, 1, 2, 3])
    plain = attack_class(model, 0.2, steps=2, samples=2, seed=0).sample(x, y)
    randomized = attack_class(model, 0.2, steps=2, samples=2, seed=0, random_start=True).sample(x, y)
    assert not torch.equal(plain.samples, randomized.samples)
    best = attack_class(model, 0.2, steps=2, samples=2, seed=0, random_start=True, restarts=3)(x, y)
    assert ((best - x).abs().flatten(1).amax(1) <= 0.2 + 1e-6).all()


def test_parallel_chains_are_one_batch_with_a_chain_dimension(digits_correct, digits_model) -> None:
    x, y = digits_correct
    x, y = x[:8], y[:8]
    # Without a random element every chain of an example is the same chain.
    alone = HMCAM(digits_model, 0.1, steps=2, samples=3, temperature=float("inf"), seed=0).sample(x, y)
    many = HMCAM(digits_model, 0.1, steps=2, samples=3, temperature=float("inf"), seed=0, chains=4).sample(x, y)
    assert many.chains == 4 and alone.chains == 1
    assert many.samples.shape == (3, 4, 8, 1, 8, 8) and many.accepted.shape == (3, 4, 8)
    assert many.objective.shape == many.prediction.shape == (3, 4, 8)
    for chain in range(4):
        torch.testing.assert_close(many.samples[:, chain], alone.samples, atol=1e-6, rtol=0)
    # attack() returns the best chain, here the same one.
    single = HMCAM(digits_model, 0.1, steps=2, samples=3, temperature=float("inf"), seed=0)
    best = HMCAM(digits_model, 0.1, steps=2, samples=3, temperature=float("inf"), seed=0, chains=4)
    torch.testing.assert_close(best(x, y), single(x, y), atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_momentum_refresh_keeps_samples_in_the_ball_and_makes_chains_differ(
    norm, eps, digits_correct, digits_model
) -> None:
    x, y = digits_correct
    x, y = x[:16], y[:16]
    attack = HMCAM(digits_model, eps, steps=3, samples=4, norm=norm, seed=0, chains=3, momentum_refresh=1.0)
    result = attack.sample(x, y)
    distance = (result.samples - x).flatten(3).norm(p=float("inf") if norm == "linf" else 2, dim=3)
    assert float(distance.max()) <= eps + 1e-5
    assert float(result.samples.min()) >= 0 and float(result.samples.max()) <= 1
    differ = (result.samples[:, 0] != result.samples[:, 1]).flatten(2).any(dim=2)
    moved = result.accepted[:, 0] | result.accepted[:, 1]
    # Two chains coincide only where both still sit at the clean start (rejected from the start on).
    assert bool(differ[moved.cummax(dim=0).values].all())
    assert float(differ.float().mean()) > 0.5


def test_a_rejected_chain_proposes_anew_only_with_momentum_refresh(digits_correct, digits_model) -> None:
    x, y = digits_correct
    x, y = x[:32], y[:32]
    for refresh in (0.0, 0.5):
        attack = HMCAM(digits_model, 0.1, 0.01, steps=3, samples=6, temperature=0.05, seed=0, momentum_refresh=refresh)
        result = attack.sample(x, y)
        rejected = ~result.accepted[:-1]
        assert bool(rejected.any()), "the test needs rejections"
        same = result.proposal_energy[1:] == result.proposal_energy[:-1]
        if refresh == 0:
            assert bool(same[rejected].all())  # the paper's chain re-proposes the very same point
        else:
            assert not bool(same[rejected].any())  # a fresh momentum gives a new proposal
            # and the kinetic energy of the fresh momentum enters H_old, which therefore varies.
            assert bool((result.energy[1:][rejected] != result.energy[:-1][rejected]).any())
