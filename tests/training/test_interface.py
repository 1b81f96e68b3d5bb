"""The method interface as the trainer drives it: setup, hooks, several steps per minibatch, budget, state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

from hmcam.core.storage import load_tensors
from hmcam.training import (
    METHODS,
    Batch,
    MethodOutput,
    MethodSetup,
    StepContext,
    TrainConfig,
    Trainer,
    TrainingMethod,
    build_method,
    train,
)
from hmcam.training.schedules import Schedule


class FreeLike(TrainingMethod):
    """Free-m's shape: three optimizer steps per minibatch on a carried perturbation, recording what it sees.

    The first layer is its own parameter group at half the rate, as YOPO's groups differ.
    """

    name = "free-like"
    replays = 3
    events: ClassVar[list[tuple[Any, ...]]] = []
    setups: ClassVar[list[MethodSetup]] = []
    extra_step: ClassVar[bool] = False

    def __init__(self, *, dataset: str | None = None) -> None:
        super().__init__(dataset=dataset)
        self.shared = torch.zeros(1)

    @override
    def setup(self, setup: MethodSetup) -> None:
        # No state has been loaded yet: the shared counter is still at its initial value.
        self.events.append(("setup", float(self.shared)))
        self.setups.append(setup)
        self.delta = torch.zeros(setup.process_batch, *setup.input_shape, device=setup.device)

    @override
    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        parameters = list(model.parameters())
        return [{"params": parameters[:2], "lr_scale": 0.5}, {"params": parameters[2:]}]

    @override
    def on_epoch_start(self, epoch: int) -> None:
        self.events.append(("start", epoch))

    @override
    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        self.events.append(("end", epoch))
        return {"shared_counter": float(self.shared)}

    @override
    def train_step(self, model: nn.Module, optimizer: Optimizer, batch: Batch, context: StepContext) -> None:
        for replay in range(self.replays + int(self.extra_step)):
            delta = self.delta.clone().requires_grad_()
            optimizer.zero_grad(set_to_none=True)
            logits = model((batch.images + delta).clamp(0, 1))
            loss = F.cross_entropy(logits, batch.labels)
            loss.backward()
            self.delta = (self.delta + 0.01 * delta.grad.sign()).clamp(-0.03, 0.03)
            optimizer.step()
            rates = [group["lr"] for group in optimizer.param_groups]
            self.events.append(("step", context.epoch, context.batch, replay, rates, context.lr(replay)))
            context.record(MethodOutput(loss, logits, {}), batch.labels)
        context.add_passes(self.replays + 0.5)
        self.shared += 1

    @override
    def passes_per_batch(self) -> float:
        return self.replays + 0.5

    @override
    def state_dict(self) -> dict[str, Tensor]:
        return {"delta": self.delta.clone()}

    @override
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.delta = state["delta"].clone()

    @override
    def shared_state_dict(self) -> dict[str, Tensor]:
        return {"counter": self.shared.clone()}

    @override
    def load_shared_state_dict(self, state: dict[str, Tensor]) -> None:
        self.shared = state["counter"].clone()


CONFIG = dict(
    dataset="fashion-mnist",
    model="mlp",
    model_options={"hidden": [16]},
    method="free-like",
    epochs=2,
    batch_size=32,
    lr=0.1,
    schedule="cosine",
    train_limit=96,
    test_limit=32,
    eval_subset=0,
    seed=0,
    progress=False,
    device="cpu",
)


@pytest.fixture
def free_like(monkeypatch: pytest.MonkeyPatch) -> type[FreeLike]:
    monkeypatch.setitem(METHODS, "free-like", FreeLike)
    monkeypatch.setattr(FreeLike, "events", [])
    monkeypatch.setattr(FreeLike, "setups", [])
    return FreeLike


def test_a_method_with_its_own_step_loop_gets_the_schedule_hooks_and_budget(
    tmp_path: Path, free_like, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = train(TrainConfig(**CONFIG, out=str(tmp_path / "run")))
    (setup,) = free_like.setups
    assert (setup.dataset_size, setup.input_shape, setup.num_classes) == (96, (1, 28, 28), 10)
    assert (setup.batch_size, setup.process_batch, setup.batches_per_epoch, setup.epochs) == (32, 32, 3, 2)
    assert setup.device == torch.device("cpu") and setup.distributed.world_size == 1
    assert setup.examples.size == 96 and not isinstance(setup.model, nn.parallel.DistributedDataParallel)

    kinds = [event[0] for event in free_like.events]
    assert kinds == ["setup", "start"] + ["step"] * 9 + ["end", "start"] + ["step"] * 9 + ["end"]
    # Each of the 3 steps of a minibatch has its own point of the schedule; the first group runs at half.
    schedule = Schedule("cosine", 0.1, 2)
    steps = [event for event in free_like.events if event[0] == "step"]
    for _, epoch, batch, replay, rates, told in steps:
        expected = schedule(epoch + (batch * 3 + replay + 0.5) / 9)
        assert rates == pytest.approx([expected / 2, expected], rel=1e-12)
        assert told == pytest.approx(expected, rel=1e-12)
    assert summary["steps"] == 18

    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["passes"] for r in history] == [3 * 3.5, 3 * 3.5]
    assert [r["passes_total"] for r in history] == [10.5, 21.0]
    assert [r["shared_counter"] for r in history] == [3.0, 6.0]
    assert all(r["train_seconds"] <= r["seconds"] for r in history)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["passes_per_batch"] == 3.5 and config["steps_per_epoch"] == 9

    # Shared state is saved once, per-process state per process; both come back on resume.
    tensors, _ = load_tensors(tmp_path / "run" / "state.safetensors")
    assert tensors["shared.counter"].tolist() == [6.0]
    assert "rank0.method.delta" in tensors and not any(k.startswith("rank0.shared") for k in tensors)

    # Interrupted after epoch 1 and resumed: set up before the state is loaded, then both states
    # continue (the counter from 3, the carried perturbation exactly: the same weights).
    original = Trainer._train_epoch

    def stop_in_epoch_two(self: Trainer) -> dict:
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**CONFIG, out=str(tmp_path / "again")))
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    free_like.events.clear()
    again = train(TrainConfig(**CONFIG, out=str(tmp_path / "again")), resume=True)
    assert again["resumed_from_epoch"] == 1
    assert free_like.events[:2] == [("setup", 0.0), ("start", 1)]
    assert again["final"]["shared_counter"] == 6.0
    expected, _ = load_tensors(tmp_path / "run" / "last.safetensors")
    found, _ = load_tensors(tmp_path / "again" / "last.safetensors")
    assert all(torch.equal(expected[name], found[name]) for name in expected)


def test_taking_more_steps_than_declared_is_an_error(tmp_path: Path, free_like, monkeypatch) -> None:
    monkeypatch.setattr(FreeLike, "extra_step", True)
    with pytest.raises(RuntimeError, match="took more than its replays = 3 optimizer steps"):
        train(TrainConfig(**CONFIG, out=str(tmp_path / "run")))


class Silent(TrainingMethod):
    """A method whose train_step forgets to report anything."""

    name = "silent"

    @override
    def train_step(self, model: nn.Module, optimizer: Optimizer, batch: Batch, context: StepContext) -> None:
        optimizer.zero_grad()


def test_a_step_that_reports_nothing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "silent", Silent)
    with pytest.raises(RuntimeError, match="must call context.record"):
        train(TrainConfig(**dict(CONFIG, method="silent"), out=str(tmp_path / "run")))


def test_budget_arithmetic() -> None:
    natural = build_method("natural", dataset="fashion-mnist")
    pgd = build_method("pgd", dataset="fashion-mnist", eps=0.1, alpha=0.02, steps=7)
    assert (natural.passes_per_batch(), pgd.passes_per_batch()) == (1.0, 8.0)
    assert natural.epochs_for_budget(80) == 80 and pgd.epochs_for_budget(80) == 10
    assert FreeLike().epochs_for_budget(35) == 10
    with pytest.raises(ValueError, match="budget must be positive"):
        pgd.epochs_for_budget(0)
    images, labels = torch.rand(4, 1, 28, 28), torch.arange(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert pgd.loss(model, images, labels, StepContext(epoch=0, step=0)).passes == 8.0
    with pytest.raises(RuntimeError, match="knows no learning rate"):
        StepContext(epoch=0, step=0).lr()


def test_a_method_must_implement_loss_or_train_step() -> None:
    class Empty(TrainingMethod):
        name = "empty"

    with pytest.raises(NotImplementedError, match="must implement loss\\(\\) or override train_step\\(\\)"):
        Empty().loss(nn.Identity(), torch.zeros(1), torch.zeros(1), StepContext(epoch=0, step=0))
