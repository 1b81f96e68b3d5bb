"""CAT (Algorithm 3, Eq. 15-16) and CAT-CE: gradients, one step by hand, persistent chains, cost, resume, processes."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hmcam.core.distributed import DistributedContext
from hmcam.core.storage import load_tensors
from hmcam.data import load_dataset
from hmcam.evaluation.accuracy import accuracies
from hmcam.models import build_model, load_checkpoint
from hmcam.training import ExampleState, TrainConfig, build_method, train
from hmcam.training.methods import Batch, CATCETraining, CATTraining, MethodSetup, StepContext
from hmcam.training.methods.cat import ChainTraining, initial_perturbation

SINGLE = DistributedContext(0, 1, 0, torch.device("cpu"), None)


# ------------------------------------------------------------------------------------ settings
def test_defaults_follow_the_dataset_and_the_paper() -> None:
    method = build_method("cat", dataset="fashion-mnist")
    assert (method.eps, method.eps_step, method.rho, method.lam, method.gradient) == (0.3, 0.3, 1.0, 2.0, "paper")
    assert method.adversarial and method.restart_every == 0
    assert build_method("cat-ce", dataset="cifar10").eps == 8 / 255
    assert build_method("cat", dataset="cifar10", eps=4 / 255, eps_step=1 / 255).eps_step == 1 / 255
    method = CATTraining(dataset="mnist", eps=0.1, replays=2, chain_steps=3, alpha=5.0, restart_every=1)
    assert method.hyperparameters() == {
        "replays": 2,
        "eps": 0.1,
        "chain_steps": 3,
        "alpha": 5.0,
        "eps_step": 0.1,
        "restart_every": 1,
        "rho": 1.0,
        "lam": 2.0,
        "gradient": "paper",
    }
    with pytest.raises(ValueError, match="dataset 'imagenet' has no default threat model; give CATTraining eps"):
        CATTraining(dataset="imagenet")
    with pytest.raises(ValueError, match=r"gradient must be one of \('paper', 'exact'\), got 'true'"):
        CATTraining(dataset="mnist", gradient="true")
    with pytest.raises(ValueError, match="restart_every must be an integer >= 0"):
        CATCETraining(dataset="mnist", restart_every=-1)
    with pytest.raises(TypeError, match="chain_steps must be an integer"):
        CATTraining(dataset="mnist", chain_steps=1.5)
    with pytest.raises(TypeError, match="takes no argument"):
        build_method("cat-ce", dataset="mnist", rho=1.0)


def test_cost_counts_chain_steps_updates_and_the_old_weights_forward() -> None:
    # T (K + 1) forward+backward passes, plus T forwards under omega~ (a third each) for Eq. 16.
    paper = CATTraining(dataset="mnist", replays=2, chain_steps=3)
    assert paper.replays == 2 and paper.passes_per_batch() == pytest.approx(2 * 4 + 2 / 3)
    assert paper.epochs_for_budget(80) == pytest.approx(80 / (8 + 2 / 3))
    assert CATTraining(dataset="mnist", replays=2, chain_steps=3, gradient="exact").passes_per_batch() == 8
    assert CATCETraining(dataset="mnist", replays=4, chain_steps=1).epochs_for_budget(80) == 10


# ----------------------------------------------------------------------------- Eq. 16 by hand
def _softmax(logits: list[float]) -> list[float]:
    total = sum(math.exp(z) for z in logits)
    return [math.exp(z) / total for z in logits]


def test_logit_gradients_are_eq_16_the_exact_gradient_and_cross_entropy_by_hand() -> None:
    logits, label, previous = [2.0, 0.0, -1.0], 1, [0.5, 0.3, 0.2]
    p, y = _softmax(logits), [0.0, 1.0, 0.0]
    z, q = torch.tensor([logits], dtype=torch.float64), torch.tensor([previous], dtype=torch.float64)
    labels = torch.tensor([label])
    paper = CATTraining(dataset="mnist").logit_gradient(z, labels, q)
    # f_w - (y - Delta f) with Delta f = f_w - f_w~: 2 p - y - q.
    assert paper[0].tolist() == pytest.approx([2 * p[c] - y[c] - previous[c] for c in range(3)], abs=1e-12)
    exact = CATTraining(dataset="mnist", gradient="exact").logit_gradient(z, labels, None)
    assert exact[0].tolist() == pytest.approx([2 * (p[c] - y[c]) for c in range(3)], abs=1e-12)
    ce = CATCETraining(dataset="mnist").logit_gradient(z, labels, None)
    assert ce[0].tolist() == pytest.approx([p[c] - y[c] for c in range(3)], abs=1e-12)
    # General weights: lam (p - y) - rho (q - y).
    weighted = CATTraining(dataset="mnist", rho=0.5, lam=3.0).logit_gradient(z, labels, q)
    assert weighted[0].tolist() == pytest.approx([3 * (p[c] - y[c]) - 0.5 * (previous[c] - y[c]) for c in range(3)])


def _tiny_network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)).double()


def _numerical_gradient(function, point: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    gradient = torch.zeros_like(point)
    for index in range(point.numel()):
        shift = torch.zeros_like(point).reshape(-1)
        shift[index] = step
        shift = shift.reshape(point.shape)
        gradient.reshape(-1)[index] = (function(point + shift) - function(point - shift)) / (2 * step)
    return gradient


@pytest.mark.parametrize(("rho", "lam"), [(1.0, 2.0), (0.5, 3.0)])
def test_chain_gradients_match_finite_differences(rho: float, lam: float) -> None:
    network, old = _tiny_network(0), _tiny_network(1)
    point = torch.rand(3, 1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 3, 1])
    previous = old(point).softmax(dim=1).detach()  # f_w~(theta^K), constant during the chain

    # Exact: the gradient of Eq. 15, lam CE(f_w(theta), y) - rho CE(f_w~(theta^K), y), summed over examples.
    def j_cd(theta: torch.Tensor) -> torch.Tensor:
        current = F.cross_entropy(network(theta), labels, reduction="sum")
        return lam * current - rho * F.cross_entropy(old(point), labels, reduction="sum")

    exact = CATTraining(dataset="mnist", rho=rho, lam=lam, gradient="exact")
    found = exact.chain_gradient(network, point, labels, None)
    assert torch.allclose(found, _numerical_gradient(j_cd, point), atol=1e-8)

    # Paper (Eq. 16): cross-entropy against the soft target (lam - rho) y + rho q - (lam - 1) p, p held at theta.
    onehot = F.one_hot(labels, 4).double()
    target = (lam - rho) * onehot + rho * previous - (lam - 1) * network(point).softmax(dim=1).detach()
    assert torch.allclose(target.sum(dim=1), torch.ones(3, dtype=torch.float64))

    def soft_cross_entropy(theta: torch.Tensor) -> torch.Tensor:
        return -(target * network(theta).log_softmax(dim=1)).sum()

    paper = CATTraining(dataset="mnist", rho=rho, lam=lam)
    found = paper.chain_gradient(network, point, labels, previous)
    assert torch.allclose(found, _numerical_gradient(soft_cross_entropy, point), atol=1e-8)
    # The two differ by rho times the backpropagated (y - q): the term Eq. 16 adds.
    assert (found - exact.chain_gradient(network, point, labels, None)).abs().max() > 1e-3
    assert torch.allclose(
        CATCETraining(dataset="mnist").chain_gradient(network, point, labels, None) * lam,
        exact.chain_gradient(network, point, labels, None),
    )


# --------------------------------------------------------------------- one step against a reference
def _setup(method: ChainTraining, model: nn.Module, size: int, seed: int = 7) -> ExampleState:
    store = ExampleState(size, SINGLE)
    method.setup(
        MethodSetup(
            dataset_size=size,
            input_shape=(1, 28, 28),
            num_classes=10,
            device=torch.device("cpu"),
            distributed=SINGLE,
            model=model,
            examples=store,
            batch_size=size,
            process_batch=size,
            batches_per_epoch=1,
            epochs=1,
            seed=seed,
        )
    )
    return store


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", hidden=(32,), mean=[0.3], std=[0.3])


def _reference_direction(kind: str, logits: torch.Tensor, labels: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    p, y = logits.softmax(dim=1), F.one_hot(labels, 10).to(logits.dtype)
    return {"cat-ce": p - y, "exact": 2 * (p - y), "paper": 2 * p - y - q}[kind]


@pytest.mark.parametrize(
    ("kind", "replays", "chain_steps"), [("cat-ce", 1, 1), ("exact", 1, 1), ("paper", 1, 1), ("paper", 2, 3)]
)
def test_chain_steps_and_updates_equal_a_hand_written_algorithm_3(kind: str, replays: int, chain_steps: int) -> None:
    # With T = K = 1 and cat-ce this is a one-step momentum attack followed by one cross-entropy step.
    eps, alpha, step, size, epoch = 0.1, 20.0, 0.07, 8, 3
    settings = dict(dataset="mnist", eps=eps, replays=replays, chain_steps=chain_steps, alpha=alpha, eps_step=step)
    method: ChainTraining = CATCETraining(**settings) if kind == "cat-ce" else CATTraining(**settings, gradient=kind)
    model = _model()
    store = _setup(method, model, size=20)
    reference = copy.deepcopy(model)
    old_weights = copy.deepcopy(model)  # omega~ = omega_0 before the first update

    generator = torch.Generator().manual_seed(1)
    images = torch.rand(size, 1, 28, 28, generator=generator)
    images[:, :, :4] = 0.0  # pixels at the lower bound, where the ball is cut by [0, 1]
    labels = torch.arange(size) % 10
    indices = torch.tensor([3, 17, 0, 9, 12, 5, 19, 1])
    # Half the chains were started earlier (epoch 1) and stand somewhere; the other half are new.
    carried = indices[:4]
    delta = (torch.rand(4, 1, 28, 28, generator=generator) * 2 - 1) * eps
    momentum = (torch.rand(4, 1, 28, 28, generator=generator) * 2 - 1) * eps
    store.write("chain", carried, delta)
    store.write("momentum", carried, momentum)
    store.write("chain_started", carried, torch.ones(4, dtype=torch.int64))

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    context = StepContext(epoch=epoch, step=0, indices=indices, examples=store)
    method.train_step(model, optimizer, Batch(images, labels, indices), context)
    assert context.meter.passes == method.passes_per_batch() and context.meter.examples == replays * size

    # The reference: v_0 = theta_0 - x for the new chains; per update, q = f_w~(theta) at the chain's
    # start, K momentum steps each followed by a projected sign step, then w~ <- w and an SGD step.
    fresh = initial_perturbation(7, indices[4:], epoch, (1, 28, 28), eps)
    velocity = torch.cat([momentum, fresh])
    theta = (images + torch.cat([delta, fresh])).clamp(0, 1)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(replays):
        q = old_weights(theta).softmax(dim=1).detach()
        for _ in range(chain_steps):
            fed = theta.clone().requires_grad_(True)
            logits = reference(fed)
            (gradient,) = torch.autograd.grad(logits, fed, _reference_direction(kind, logits.detach(), labels, q))
            velocity = (velocity + alpha * gradient).clamp(-eps, eps)
            moved = torch.minimum(torch.maximum(theta + step * velocity.sign(), images - eps), images + eps)
            assert (moved.clamp(0, 1) != theta).any()
            theta = moved.clamp(0, 1)
        reference_optimizer.zero_grad()
        F.cross_entropy(reference(theta), labels).backward()
        old_weights = copy.deepcopy(reference)
        reference_optimizer.step()

    for (name, found), expected in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.allclose(found, expected, atol=1e-6), name
    assert torch.allclose(store.read("chain", indices), theta - images, atol=1e-6)
    assert torch.allclose(store.read("momentum", indices), velocity, atol=1e-6)
    assert store.read("chain_started", indices).tolist() == [1] * 4 + [epoch] * 4
    assert (theta - images).abs().max() <= eps + 1e-6 and theta.min() >= 0
    if kind == "paper":  # omega~ is the weights just before the last step
        shared = method.shared_state_dict()
        assert all(torch.equal(shared["previous." + n], v) for n, v in old_weights.state_dict().items())
        assert not torch.equal(shared["previous.model.layers.0.weight"], model.state_dict()["model.layers.0.weight"])
    else:
        assert method.shared_state_dict() == {}


def test_a_fresh_chain_depends_on_the_example_and_epoch_not_on_its_batch() -> None:
    draw = initial_perturbation(5, torch.tensor([4, 9, 2]), 0, (1, 3, 3), 0.2)
    alone = initial_perturbation(5, torch.tensor([9]), 0, (1, 3, 3), 0.2)
    assert torch.equal(draw[1], alone[0]) and draw.abs().max() <= 0.2 and draw.min() < -0.1 < 0.1 < draw.max()
    assert not torch.equal(draw[1], initial_perturbation(5, torch.tensor([9]), 1, (1, 3, 3), 0.2)[0])
    assert not torch.equal(draw[1], initial_perturbation(6, torch.tensor([9]), 0, (1, 3, 3), 0.2)[0])
    state = torch.get_rng_state()
    initial_perturbation(5, torch.arange(3), 0, (2,), 0.1)
    assert torch.equal(state, torch.get_rng_state())  # the global stream is untouched


def test_omega_tilde_is_checked_when_restored() -> None:
    method = CATTraining(dataset="mnist")
    _setup(method, _model(), size=4)
    saved = method.shared_state_dict()
    method.load_shared_state_dict(saved)
    with pytest.raises(ValueError, match="expects omega~ for"):
        method.load_shared_state_dict({k: v for k, v in saved.items() if "bias" not in k})
    with pytest.raises(RuntimeError, match="call setup"):
        CATCETraining(dataset="mnist").train_step(
            _model(), torch.optim.SGD(_model().parameters(), lr=0.1), Batch(*[torch.zeros(1)] * 3), StepContext(0, 0)
        )


# ------------------------------------------------------------------------------ through the trainer
def _config(tmp_path: Path, name: str, **changes) -> dict:
    config = dict(
        dataset="fashion-mnist",
        model="mlp",
        model_options={"hidden": [16]},
        method="cat-ce",
        method_kwargs={"eps": 0.1, "replays": 1, "chain_steps": 1},
        epochs=2,
        batch_size=32,
        lr=0.05,
        train_limit=96,
        test_limit=32,
        eval_subset=0,
        seed=0,
        progress=False,
        device="cpu",
        out=str(tmp_path / name),
    )
    return {**config, **changes}


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("restart_every", [0, 1])
def test_each_chain_continues_where_it_ended_at_its_last_visit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart_every: int
) -> None:
    visits: dict[int, list[dict]] = {}
    read_chains, write = ChainTraining.read_chains, ExampleState.write

    def recording_read(self, indices, epoch, like):
        delta, momentum, fresh = read_chains(self, indices, epoch, like)
        for row, index in enumerate(indices.tolist()):
            visits.setdefault(index, []).append({"epoch": epoch, "read": (delta[row].clone(), momentum[row].clone())})
        return delta, momentum, fresh

    def recording_write(self, name, indices, rows):
        write(self, name, indices, rows)
        if name in ("chain", "momentum"):
            for row, index in enumerate(indices.tolist()):
                visits[index][-1][name] = rows[row].clone()

    monkeypatch.setattr(ChainTraining, "read_chains", recording_read)
    monkeypatch.setattr(ExampleState, "write", recording_write)
    kwargs = {"eps": 0.1, "replays": 1, "chain_steps": 1, "restart_every": restart_every}
    train(TrainConfig(**_config(tmp_path, "run", method_kwargs=kwargs)))

    # 96 examples in 3 minibatches of 32: every example is met once per epoch, in another minibatch.
    assert sorted(visits) == list(range(96))
    assert [r["train_chain_starts"] for r in _metrics(tmp_path / "run")] == [1.0, float(restart_every)]
    for index, (first, second) in visits.items():
        assert (first["epoch"], second["epoch"]) == (0, 1)
        start = initial_perturbation(0, torch.tensor([index]), 0, (1, 28, 28), 0.1)[0]
        assert torch.equal(first["read"][0], start) and torch.equal(first["read"][1], start)
        assert not torch.equal(first["chain"], first["read"][0])  # the chain moved
        if restart_every:  # Algorithm 3's start in every epoch
            again = initial_perturbation(0, torch.tensor([index]), 1, (1, 28, 28), 0.1)[0]
            assert torch.equal(second["read"][0], again) and torch.equal(second["read"][1], again)
        else:
            assert torch.equal(second["read"][0], first["chain"]) and torch.equal(second["read"][1], first["momentum"])
    state, _ = load_tensors(tmp_path / "run" / "state.safetensors")
    assert set(state["examples.chain_started"].tolist()) == {restart_every}
    assert state["examples.chain"].abs().max() <= 0.1 + 1e-6


# LeNet (convolutions, channels-last) with CAT's paper gradient: chains, momenta, chain starts and
# omega~ must all come back from the state for the resumed run to end with the same weights.
RESUME_CONFIG = dict(
    dataset="fashion-mnist",
    model="lenet",
    method="cat",
    method_kwargs={"eps": 0.1, "replays": 2, "chain_steps": 1},
    epochs=3,
    batch_size=32,
    lr=0.05,
    train_limit=256,
    test_limit=64,
    eval_subset=32,
    eval_steps=2,
    seed=3,
    deterministic=True,
    progress=False,
    device="cpu",
)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights_chains_and_omega_tilde(helpers, tmp_path: Path) -> None:
    # Killed after the fourth minibatch of the second epoch; weights, metrics and the whole trainer state
    # (chains, momenta, start epochs, omega~) must come out as in an uninterrupted run.
    helpers.assert_resumes_exactly(tmp_path, RESUME_CONFIG, kill_at=(1, 3))
    state, _ = load_tensors(tmp_path / "killed" / "state.safetensors")
    assert {"examples.chain", "examples.momentum", "examples.chain_started"} <= state.keys()
    assert any(name.startswith("shared.previous.") for name in state)


# An MLP has neither batch norm nor dropout, so two processes on halves of each global batch make the
# same chains (per-example gradients) and the same averaged update as one process on the whole batch.
PROCESSES_CONFIG = dict(
    dataset="fashion-mnist",
    model="mlp",
    model_options={"hidden": [64]},
    method="cat",
    method_kwargs={"eps": 0.1, "replays": 2, "chain_steps": 2},
    epochs=2,
    batch_size=32,
    lr=0.05,
    train_limit=256,
    test_limit=50,
    eval_subset=0,
    seed=4,
    deterministic=True,
    progress=False,
    device="cpu",
)


@pytest.mark.slow
def test_two_gloo_processes_make_the_chains_and_weights_of_one_process(helpers, tmp_path: Path) -> None:
    single, summary = helpers.two_process_runs(tmp_path, PROCESSES_CONFIG)
    assert summary["steps"] == 2 * 8 * 2 and summary["final"]["passes"] == pytest.approx(8 * (2 * 3 + 2 / 3))

    reference, _ = load_tensors(tmp_path / "single" / "state.safetensors")
    state, meta = load_tensors(tmp_path / "ddp" / "state.safetensors")
    assert meta["world_size"] == 2
    assert torch.equal(state["examples.chain_started"], reference["examples.chain_started"])
    # Each example was advanced by whichever process held it, and read the next epoch by the other.
    assert set(state["examples.chain_started"].tolist()) == {0}
    # Measured: chains equal, momenta 2.6e-6 apart, final weights 9e-8 apart. A momentum that rounding
    # puts on the other side of 0 would move one pixel of one chain by a step (and the weights a little),
    # so a few such pixels (1e-4 of them) and 1e-4 in the weights are allowed.
    for name in ("examples.chain", "examples.momentum"):
        assert (state[name] - reference[name]).abs().gt(1e-4).double().mean().item() <= 1e-4, name
    previous = [k for k in reference if k.startswith("shared.previous.")]
    assert previous and max((state[k] - reference[k]).abs().max().item() for k in previous) <= 1e-4
    expected, _ = load_tensors(tmp_path / "single" / "last.safetensors")
    found, _ = load_tensors(tmp_path / "ddp" / "last.safetensors")
    assert max((expected[k] - found[k]).abs().max().item() for k in expected) <= 1e-4


# LeNet on 1000 Fashion-MNIST images, eps 0.1, a budget of 4 epochs of CAT (T = 4, K = 1: 9.33 passes
# a minibatch), natural training for the same passes (37 epochs). Both are scored as the trainer
# scores every epoch (hmcam.evaluation.accuracy.accuracies: PGD-10, eps 0.1, random start), once at
# the end. Measured with seeds 0-3 on these 300 test images: CAT 0.50-0.54 robust (0.62-0.73 clean),
# natural 0.07-0.10 robust (0.82-0.85 clean), a gap of 0.40-0.46.
BUDGET_CONFIG = dict(
    dataset="fashion-mnist",
    model="lenet",
    epochs=4,
    batch_size=64,
    lr=0.05,
    train_limit=1000,
    test_limit=300,
    eval_subset=0,
    seed=1,
    progress=False,
    device="cpu",
)


@pytest.mark.slow
def test_cat_raises_robust_accuracy_over_natural_training_at_the_same_cost(tmp_path: Path) -> None:
    cat = train(TrainConfig(**BUDGET_CONFIG, method="cat", method_kwargs={"eps": 0.1}, out=str(tmp_path / "cat")))
    budget = BUDGET_CONFIG["epochs"] * build_method("cat", dataset="fashion-mnist").passes_per_batch()
    epochs = int(build_method("natural").epochs_for_budget(budget))
    natural = train(TrainConfig(**dict(BUDGET_CONFIG, epochs=epochs), method="natural", out=str(tmp_path / "natural")))
    assert epochs == 37 and natural["final"]["passes_total"] == pytest.approx(cat["final"]["passes_total"], rel=0.01)

    def robust(run: str) -> float:
        network, _ = load_checkpoint(tmp_path / run / "last.safetensors")
        _, value = accuracies(
            network,
            load_dataset("fashion-mnist", "test", limit=300),
            robust_examples=300,
            eps=0.1,
            alpha=None,
            steps=10,
            seed=0,
            batch_size=300,
            context=SINGLE,
        )
        assert value is not None
        return value

    cat_robust, natural_robust = robust("cat"), robust("natural")
    assert cat_robust >= 0.35 and natural_robust <= 0.25 and cat_robust - natural_robust >= 0.2
