"""Free adversarial training (Shafahi et al., 2019): each minibatch replayed m times, one backward for both players.

Free-m keeps one perturbation ``delta`` of the minibatch's shape, zero at the start, and carries it
across replays, minibatches and epochs. Each of the m replays of a minibatch is a forward pass on
``clip(x + delta, 0, 1)`` and one backward pass, which gives the weights' gradient and
``grad_delta`` at once; then ``delta = clip(delta + eps sign(grad_delta), -eps, eps)`` and the
optimizer steps. Since ``delta`` is indexed by position in the minibatch, the perturbation carried
into the next minibatch lands on other images: a warm start, as in the authors' code, not a chain
per example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

from hmcam.core.validate import check_positive_float, check_positive_int
from hmcam.training.methods.base import Batch, MethodOutput, MethodSetup, StepContext, TrainingMethod
from hmcam.training.methods.registry import register_method
from hmcam.training.threat import CIFAR_LIKE, MNIST_LIKE, Threat, fill_defaults

#: Replays per minibatch by threat model: Free-10 on MNIST and Free-8 on CIFAR, the paper's rivals (Tables 4, 7).
REPLAYS: dict[Threat, int] = {MNIST_LIKE: 10, CIFAR_LIKE: 8}


@register_method
class FreeTraining(TrainingMethod):
    """Free-m adversarial training ("Adversarial training for free!", Shafahi et al. 2019).

    ``replays`` is m, the optimizer steps taken on each minibatch (the learning-rate schedule counts
    them, and :meth:`epochs_for_budget` divides by m); ``eps`` is both the radius and the step of
    ``delta``. Unset, both take the dataset's defaults: eps from :mod:`hmcam.training.threat`, m = 10
    on MNIST-like data and 8 on CIFAR. ``delta`` is this process's state, saved with the trainer state.
    """

    name = "free"
    adversarial = True

    def __init__(self, *, dataset: str | None = None, eps: float | None = None, replays: int | None = None) -> None:
        super().__init__(dataset=dataset)
        values = fill_defaults(
            dataset,
            {"eps": eps, "replays": replays},
            "dataset {dataset!r} has no Free training defaults; give {missing} explicitly",
            lambda threat: {"eps": threat.eps, "replays": REPLAYS[threat]} if threat in REPLAYS else None,
        )
        self.eps: float = check_positive_float("eps", values["eps"])
        self.replays = check_positive_int("replays", values["replays"])
        self.delta: Tensor | None = None

    @override
    def setup(self, setup: MethodSetup) -> None:
        """Start ``delta`` at zero, shaped like this process's minibatch, on the training device."""
        self.delta = torch.zeros((setup.process_batch, *setup.input_shape), device=setup.device)

    @override
    def hyperparameters(self) -> dict[str, float | int]:
        """The base settings (``replays`` = m) plus ``eps``."""
        return {**super().hyperparameters(), "eps": self.eps}

    def _delta(self) -> Tensor:
        if self.delta is None:
            raise RuntimeError("Free training carries its perturbation from setup(): call setup() first")
        return self.delta

    @override
    def train_step(self, model: nn.Module, optimizer: Optimizer, batch: Batch, context: StepContext) -> None:
        """Free-m on a minibatch: m times a forward at ``clip(x + delta)``, one backward, steps on delta and weights."""
        images, labels, _ = batch
        for _ in range(self.replays):
            delta = self._delta().detach().requires_grad_(True)
            optimizer.zero_grad(set_to_none=True)
            logits = model((images + delta).clamp(0, 1))
            loss = F.cross_entropy(logits, labels)
            loss.backward()  # type: ignore[no-untyped-call]  # Tensor.backward has no annotations
            assert delta.grad is not None  # the forward pass used delta
            self.delta = (delta.detach() + self.eps * delta.grad.sign()).clamp(-self.eps, self.eps)
            optimizer.step()
            context.record(MethodOutput(loss, logits, {}), labels)
            context.add_passes(1.0)

    @override
    def state_dict(self) -> dict[str, Tensor]:
        """``delta``, this process's carried perturbation."""
        return {"delta": self._delta().detach().clone()}

    @override
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore ``delta`` (on the training device); its shape must be this process's minibatch's."""
        current = self._delta()
        if set(state) != {"delta"} or state["delta"].shape != current.shape:
            shapes = {name: tuple(value.shape) for name, value in state.items()}
            raise ValueError(f"Free training expects delta of shape {tuple(current.shape)}, got {shapes}")
        self.delta = state["delta"].to(device=current.device, dtype=current.dtype)
