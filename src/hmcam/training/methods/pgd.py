"""PGD adversarial training (Madry et al., 2018): minimize the loss at a K-step PGD maximizer (Eq. 14)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from hmcam.attacks import PGD
from hmcam.core.distributed import unwrap_model
from hmcam.training.methods.base import MethodOutput, StepContext, TrainingMethod
from hmcam.training.methods.registry import register_method
from hmcam.training.threat import checked_threat


@register_method
class PGDTraining(TrainingMethod):
    """Train on L-inf PGD examples: ``steps`` steps of size ``alpha`` from a uniform random start.

    The inner maximization of Eq. (14) is approximated by PGD-K, run on the network itself in eval
    mode with frozen parameters (the attack's hygiene), then the model is trained on the examples in
    its training mode. Unset ``eps``, ``alpha`` and ``steps`` take the dataset's defaults
    (:mod:`hmcam.training.threat`: MNIST-like 0.3 / 0.01 / 40, CIFAR 8/255 / 2/255 / 7); for a
    dataset without defaults all three must be given.
    """

    name = "pgd"
    adversarial = True

    def __init__(
        self,
        *,
        dataset: str | None = None,
        eps: float | None = None,
        alpha: float | None = None,
        steps: int | None = None,
    ) -> None:
        super().__init__(dataset=dataset)
        threat = checked_threat(dataset, eps, alpha, steps, "PGD training")
        self.eps: float = threat.eps
        self.alpha, self.steps = threat.alpha, threat.steps

    @override
    def hyperparameters(self) -> dict[str, float | int]:
        """The base settings plus ``eps``, ``alpha`` and ``steps``."""
        return {**super().hyperparameters(), "eps": self.eps, "alpha": self.alpha, "steps": self.steps}

    @override
    def passes_per_batch(self, network: nn.Module | None = None, input_shape: tuple[int, ...] | None = None) -> float:
        """``steps + 1``: K input-gradient passes of the attack and the training pass.

        Known before any setup, whatever the network: ``network`` and ``input_shape`` are ignored.
        """
        return float(self.steps + 1)

    @override
    def loss(self, model: nn.Module, images: Tensor, labels: Tensor, context: StepContext) -> MethodOutput:
        """Cross-entropy of ``model`` (in its training mode) on PGD examples of ``images``."""
        # seed=None: random starts come from the global RNG, which the trainer seeds and checkpoints.
        attack = PGD(unwrap_model(model), eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=True)
        adversarial = attack(images, labels)
        logits = model(adversarial)
        return MethodOutput(F.cross_entropy(logits, labels), logits, {}, passes=self.passes_per_batch())
