"""Fast adversarial training (Wong et al., 2020): FGSM from a uniform random start ("FGSM-RS").

Per minibatch, two passes: one FGSM step of ``1.25 eps`` from ``x + U(-eps, eps)``, then training on
its result, under fp16 autocast with a gradient scaler on CUDA. :func:`global_batch_noise` draws the
random starts of this method, YOPO and TRADES. The details: docs/training.md, "Fast adversarial
training".
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

from hmcam.core.distributed import unwrap_model
from hmcam.core.validate import check_flag, check_positive_float
from hmcam.training.methods.base import Batch, MethodOutput, MethodSetup, StepContext, TrainingMethod
from hmcam.training.methods.registry import register_method
from hmcam.training.threat import fill_defaults

#: The authors' FGSM step as a multiple of eps.
STEP_RATIO = 1.25
#: Salt of fast AT's random starts, which sets its stream apart from other methods' under the same seed.
FAST_STREAM = 0x66617374


def global_batch_noise(
    like: Tensor,
    *,
    seed: int,
    epoch: int,
    batch: int,
    stream: int,
    rank: int = 0,
    world_size: int = 1,
    normal: bool = False,
) -> Tensor:
    """Noise of ``like``'s shape, dtype and device: U(-1, 1), or N(0, 1) when ``normal``.

    ``like`` is the share of process ``rank`` (of ``world_size``) in global minibatch ``batch`` of
    ``epoch``. The noise is drawn for the whole global minibatch from a generator on ``like``'s
    device seeded by ``(seed, epoch, batch, stream)`` alone, and the process takes positions
    ``rank, rank + world_size, ...`` (the trainer's dealing), so every example gets the same draw
    whatever the number of processes, and a resumed run draws what an uninterrupted one did.
    """
    state = np.random.SeedSequence([seed, epoch, batch, stream]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device=like.device).manual_seed(int(state[0]) << 32 | int(state[1]))
    shape = (like.shape[0] * world_size, *like.shape[1:])
    draw = torch.randn if normal else torch.rand
    noise = draw(shape, generator=generator, device=like.device, dtype=like.dtype)[rank::world_size]
    # In like's memory layout (channels-last images), so that sums with it keep the layout.
    shaped = torch.empty_like(like).copy_(noise)
    return shaped if normal else 2 * shaped - 1


@register_method
class FastTraining(TrainingMethod):
    """FGSM-RS adversarial training (Wong et al., "Fast is better than free", 2020): 2 passes per minibatch.

    ``eps`` is the radius (unset: the dataset's, :mod:`hmcam.training.threat`), ``alpha`` the FGSM
    step (unset: 1.25 eps) and ``amp`` turns on fp16 autocast with a gradient scaler on CUDA (the
    CPU always trains in fp32). Train with ``schedule="cyclic"``, as the authors do.
    """

    name = "fast"
    adversarial = True

    def __init__(
        self,
        *,
        dataset: str | None = None,
        eps: float | None = None,
        alpha: float | None = None,
        amp: bool = True,
    ) -> None:
        super().__init__(dataset=dataset)
        values = fill_defaults(
            dataset, {"eps": eps}, "dataset {dataset!r} has no default threat model; give fast training eps"
        )
        self.eps: float = check_positive_float("eps", values["eps"])
        self.alpha = STEP_RATIO * self.eps if alpha is None else check_positive_float("alpha", alpha)
        self.amp = check_flag("amp", amp)
        self.seed, self.rank, self.world_size = 0, 0, 1
        self.scaler: torch.amp.GradScaler | None = None

    @override
    def setup(self, setup: MethodSetup) -> None:
        """Remember the seed and this process's place; make the gradient scaler when training on CUDA with amp."""
        self.seed, self.rank, self.world_size = setup.seed, setup.distributed.rank, setup.distributed.world_size
        if self.amp and setup.device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")

    @override
    def hyperparameters(self) -> dict[str, float | int | bool]:
        """The base settings plus ``eps``, ``alpha`` and ``amp``."""
        return {**super().hyperparameters(), "eps": self.eps, "alpha": self.alpha, "amp": self.amp}

    @override
    def passes_per_batch(self, network: nn.Module | None = None, input_shape: tuple[int, ...] | None = None) -> float:
        """2: the FGSM pass and the training pass, whatever the network (``network``, ``input_shape`` ignored)."""
        return 2.0

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        """fp16 autocast while a scaler is in use (CUDA with amp), else nothing."""
        if self.scaler is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.float16)

    def perturb(self, model: nn.Module, images: Tensor, labels: Tensor, context: StepContext) -> Tensor:
        """``x + delta``: one FGSM step of size ``alpha`` from a uniform start, in the eps-ball and [0, 1]."""
        noise = global_batch_noise(
            images,
            seed=self.seed,
            epoch=context.epoch,
            batch=context.batch,
            stream=FAST_STREAM,
            rank=self.rank,
            world_size=self.world_size,
        )
        start = (images + self.eps * noise).clamp(0, 1) - images
        delta = start.detach().requires_grad_(True)
        with self._precision():
            loss = F.cross_entropy(unwrap_model(model)(images + delta), labels)
        # Scaled like the update's loss, so fp16 gradients do not underflow to a zero sign; an
        # overflow (after which the scaler skips the update) must not turn the step into NaN.
        scaled = loss if self.scaler is None else self.scaler.scale(loss)
        (gradient,) = torch.autograd.grad(scaled, delta)
        delta = (start + self.alpha * torch.nan_to_num(gradient).sign()).clamp(-self.eps, self.eps)
        return (images + delta).clamp(0, 1).detach()

    @override
    def loss(self, model: nn.Module, images: Tensor, labels: Tensor, context: StepContext) -> MethodOutput:
        """Cross-entropy of ``model`` (training mode) at the FGSM-RS examples of ``images``; 2 passes."""
        adversarial = self.perturb(model, images, labels, context)
        with self._precision():
            logits = model(adversarial)
            loss = F.cross_entropy(logits, labels)
        return MethodOutput(loss, logits, {}, passes=self.passes_per_batch())

    @override
    def train_step(self, model: nn.Module, optimizer: Optimizer, batch: Batch, context: StepContext) -> None:
        """The default step in fp32; with a scaler, backward on the scaled loss and ``scaler.step``."""
        if self.scaler is None:
            super().train_step(model, optimizer, batch, context)
            return
        optimizer.zero_grad(set_to_none=True)
        output = self.loss(model, batch.images, batch.labels, context)
        self.scaler.scale(output.loss).backward()  # type: ignore[no-untyped-call]  # Tensor.backward has no annotations
        # scaler.step calls optimizer.step() (the trainer sets its rate) unless the gradients overflowed.
        self.scaler.step(optimizer)
        self.scaler.update()
        context.record(output, batch.labels)
        context.add_passes(output.passes)

    @override
    def shared_state_dict(self) -> dict[str, Tensor]:
        """The gradient scaler's scale and growth tracker (identical on every process); empty without a scaler."""
        if self.scaler is None:
            return {}
        state = self.scaler.state_dict()
        return {
            "scale": torch.tensor(state["scale"], dtype=torch.float64),
            "growth_tracker": torch.tensor(state["_growth_tracker"], dtype=torch.int64),
        }

    @override
    def load_shared_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the scaler's scale and growth tracker; a run without a scaler accepts only ``{}``."""
        if self.scaler is None:
            if state:
                raise ValueError(
                    f"training method {self.name!r} was saved with a gradient scaler (amp on CUDA); "
                    "resume it on CUDA with amp"
                )
            return
        if set(state) != {"scale", "growth_tracker"}:
            raise ValueError(f"training method {self.name!r} expects the scaler's scale and growth_tracker")
        saved = self.scaler.state_dict()
        saved.update(scale=float(state["scale"].item()), _growth_tracker=int(state["growth_tracker"].item()))
        self.scaler.load_state_dict(saved)
