"""How a training run is evaluated after every epoch: clean accuracy, and PGD accuracy on a fixed subset.

Clean accuracy is measured on the whole evaluation split, robust accuracy under ``eval_steps``-step
L-inf PGD on its first ``eval_subset`` examples (:func:`hmcam.evaluation.accuracy.accuracies`, which
never touches the training's random streams). The radius is ``eval_eps``, else the training
method's eps, else the dataset's default threat model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hmcam.core.batching import in_memory
from hmcam.core.distributed import DistributedContext, unwrap_model
from hmcam.evaluation.accuracy import accuracies
from hmcam.training.config import TrainConfig
from hmcam.training.datasets import LoadedSplit
from hmcam.training.threat import default_threat


def evaluation_threat(config: TrainConfig, dataset: str, method_eps: float | None) -> tuple[float | None, float | None]:
    """The ``(eps, alpha)`` of robust evaluation, ``(None, None)`` when ``eval_subset`` is 0 (none).

    ``alpha`` None means the default step, ``2.5 * eps / steps``; a dataset without a default threat
    model needs ``eval_eps`` when the method has no eps.
    """
    if config.eval_subset == 0:
        return None, None
    eps = config.eval_eps if config.eval_eps is not None else method_eps
    if eps is None:
        threat = default_threat(dataset)
        if threat is None:
            raise ValueError(
                f"dataset {dataset!r} has no default threat model: set eval_eps, or eval_subset=0 "
                "to skip robust evaluation"
            )
        eps = threat.eps
    return eps, config.eval_alpha


class EpochEvaluation:
    """The per-epoch evaluation of the run of ``config`` on ``test_set`` (see the module docstring).

    ``dataset`` names the data (for its default threat model) and ``method_eps`` is the training
    method's radius, None for natural training.
    """

    def __init__(
        self,
        config: TrainConfig,
        test_set: LoadedSplit,
        dataset: str,
        method_eps: float | None,
        context: DistributedContext,
    ) -> None:
        self.config = config
        self.test_set = test_set
        self.context = context
        self.eps, self.alpha = evaluation_threat(config, dataset, method_eps)

    def settings(self) -> dict[str, Any]:
        """What the run's ``config.json`` records of it: ``eps``, ``alpha``, ``steps`` and robust ``examples``."""
        return {
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.config.eval_steps,
            "examples": min(self.config.eval_subset, len(self.test_set)),
        }

    def __call__(self, model: nn.Module) -> tuple[float, float | None]:
        """``(clean, robust)`` accuracy of ``model`` (unwrapped here), robust None when not measured."""
        return accuracies(
            unwrap_model(model),
            self.test_set,
            robust_examples=self.config.eval_subset,
            eps=self.eps,
            alpha=self.alpha,
            steps=self.config.eval_steps,
            seed=self.config.seed,
            batch_size=self.config.batch_size,
            context=self.context,
            workers=0 if in_memory(self.test_set) else self.config.workers,
        )
