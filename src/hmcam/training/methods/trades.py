"""TRADES (Zhang et al., 2019): cross-entropy on clean examples plus beta times a KL term at a KL maximizer.

The loss of a minibatch is ``CE(f(x), y) + beta * KL``, where ``KL`` is the mean over the examples
of ``KL(softmax f(x) || softmax f(x'))`` (the authors' ``KLDivLoss(log_softmax(f(x')),
softmax(f(x)))``, summed and divided by the batch size), and the gradient flows through both
branches. The adversary ``x'`` comes from K steps of sign ascent on that KL, of size alpha,
starting at ``x + 0.001 N(0, 1)`` and projected onto the eps-ball and [0, 1] after every step; the
attack runs on the unwrapped network with the attacks' hygiene (eval mode, frozen parameters), as
the authors switch to eval mode for it. The authors' attack recomputes the clean output at every
step; it does not change, so here it is computed once per minibatch. In the loss the clean logits
serve both terms, where the authors' code runs the clean batch through the network twice.

**Cost**, in forward+backward passes: K attack steps (one each), the attack's clean forward pass
(a third: a backward costs about two forwards) and the update's forward and backward on the clean
and on the adversarial batch (two), so ``K + 7/3`` per minibatch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks.hygiene import attack_mode
from hmcam.core.distributed import unwrap_model
from hmcam.core.validate import check_non_negative_float
from hmcam.training.methods.base import MethodOutput, MethodSetup, StepContext, TrainingMethod
from hmcam.training.methods.fast import global_batch_noise
from hmcam.training.methods.registry import register_method
from hmcam.training.threat import checked_threat

#: The standard deviation of the attack's Gaussian start around the clean image, the authors' 0.001.
START_STD = 0.001
#: A forward pass without a backward one, in forward+backward passes.
FORWARD_PASS = 1 / 3
#: Salt of TRADES's random starts (see :func:`~hmcam.training.methods.fast.global_batch_noise`).
TRADES_STREAM = 0x74726164


@register_method
class TRADESTraining(TrainingMethod):
    """TRADES ("Theoretically principled trade-off between robustness and accuracy", Zhang et al. 2019).

    ``beta`` weighs the KL term (6, the authors' setting for their robust CIFAR-10 models; 1 is a
    milder trade-off); ``eps``, ``alpha`` and ``steps`` (K) define the attack and, unset, take the
    dataset's threat model (:mod:`hmcam.training.threat`: MNIST-like 0.3 / 0.01 / 40, the authors'
    MNIST attack; CIFAR 8/255 / 2/255 / 7). For a dataset without defaults all three must be given.
    """

    name = "trades"
    adversarial = True

    def __init__(
        self,
        *,
        dataset: str | None = None,
        eps: float | None = None,
        alpha: float | None = None,
        steps: int | None = None,
        beta: float = 6.0,
    ) -> None:
        super().__init__(dataset=dataset)
        threat = checked_threat(dataset, eps, alpha, steps, "TRADES")
        self.eps: float = threat.eps
        self.alpha, self.steps = threat.alpha, threat.steps
        self.beta = check_non_negative_float("beta", beta)
        self.seed, self.rank, self.world_size = 0, 0, 1

    @override
    def setup(self, setup: MethodSetup) -> None:
        """Remember the seed and this process's place among the processes, for the random starts."""
        self.seed, self.rank, self.world_size = setup.seed, setup.distributed.rank, setup.distributed.world_size

    @override
    def hyperparameters(self) -> dict[str, float | int]:
        """The base settings plus ``eps``, ``alpha``, ``steps`` and ``beta``."""
        return {
            **super().hyperparameters(),
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "beta": self.beta,
        }

    @override
    def passes_per_batch(self, network: nn.Module | None = None, input_shape: tuple[int, ...] | None = None) -> float:
        """``K + 7/3``: K attack steps, the attack's clean forward pass and the update on two batches.

        Known before :meth:`setup`, whatever the network: ``network`` and ``input_shape`` are ignored.
        """
        return self.steps + FORWARD_PASS + 2

    def perturb(self, network: nn.Module, images: Tensor, context: StepContext) -> Tensor:
        """``x'``: K sign-ascent steps on the KL from the clean output, from ``x + 0.001 N(0, 1)``, in eval mode."""
        noise = global_batch_noise(
            images,
            seed=self.seed,
            epoch=context.epoch,
            batch=context.batch,
            stream=TRADES_STREAM,
            rank=self.rank,
            world_size=self.world_size,
            normal=True,
        )
        point = images + START_STD * noise
        with attack_mode(network):
            with torch.no_grad():
                clean = F.softmax(network(images), dim=1)
            for _ in range(self.steps):
                point = point.detach().requires_grad_(True)
                divergence = F.kl_div(F.log_softmax(network(point), dim=1), clean, reduction="sum")
                (gradient,) = torch.autograd.grad(divergence, point)
                point = point.detach() + self.alpha * gradient.sign()
                point = torch.min(torch.max(point, images - self.eps), images + self.eps).clamp(0, 1)
        return point.detach()

    @override
    def loss(self, model: nn.Module, images: Tensor, labels: Tensor, context: StepContext) -> MethodOutput:
        """``CE(f(x), y) + beta KL(f(x) || f(x'))`` with ``model`` in training mode; logs both terms."""
        adversarial = self.perturb(unwrap_model(model), images, context)
        logits = model(images)
        adversarial_logits = model(adversarial)
        natural = F.cross_entropy(logits, labels)
        robust = F.kl_div(F.log_softmax(adversarial_logits, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        stats: dict[str, Tensor | float] = {"natural_loss": natural.detach(), "kl": robust.detach()}
        return MethodOutput(natural + self.beta * robust, adversarial_logits, stats, passes=self.passes_per_batch())
