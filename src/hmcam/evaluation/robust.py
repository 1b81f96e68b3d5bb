"""Robust evaluation: clean accuracy, robust accuracy per attack and the per-example worst case.

:func:`evaluate_robustness` answers, for every example, "does any of these attacks find a point of
the eps-ball that the model misclassifies?", fast (a cascade, cheapest attack first, each only on
the examples still robust), checked for gradient masking, resumable and shardable over processes.
Its parts: :mod:`~hmcam.evaluation.config` (the settings), :mod:`~hmcam.evaluation.cascade` (the
engine), :mod:`~hmcam.evaluation.result` (the result and its run folder), :mod:`~hmcam.evaluation.state`
(resume), :mod:`~hmcam.evaluation.masking` (the checks' verdicts) and :mod:`~hmcam.evaluation.runner`
(one attack, verified). ``docs/evaluation.md`` says what the numbers mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor, nn

from hmcam.core.distributed import DistributedContext
from hmcam.core.validate import check_unit_interval
from hmcam.evaluation.cascade import Cascade
from hmcam.evaluation.config import resolve_config
from hmcam.evaluation.result import RobustEvaluation


def evaluate_robustness(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[str] | None = None,
    *,
    suite: str | None = None,
    eps: float,
    norm: str = "linf",
    steps: int | None = None,
    restarts: int | None = None,
    alpha: float | None = None,
    batch_size: int = 128,
    seed: int = 0,
    standalone: bool = False,
    check_examples: int = 500,
    source: nn.Module | None = None,
    margin: float = 0.01,
    state_dir: str | Path | None = None,
    context: DistributedContext | None = None,
    progress: bool = True,
    callback: Callable[[int, str], None] | None = None,
) -> RobustEvaluation:
    """Clean accuracy, robust accuracy per attack and the per-example worst case of ``model`` on ``images``.

    ``images`` are pixels in [0, 1] ([N, ...], on the model's device) and ``labels`` their classes.
    The attacks are a ``suite`` of :data:`~hmcam.evaluation.suites.SUITES` (default ``autoattack``,
    the reference's standard AutoAttack, in its order) or ``attacks``, names from
    :data:`hmcam.attacks.ATTACKS` with an eps (not CW-L2), run cheapest first. In the ``paper`` and
    ``fast`` suites and a list, each attack gets ``steps`` gradient steps (default 20; ``alpha``
    overrides its step size) and, if it draws random starts, ``restarts`` runs (default 1); the
    AutoAttack suites fix their own. Each attack runs only on the examples still robust (see
    ``docs/evaluation.md`` and :data:`~hmcam.evaluation.result.PER_ATTACK_NOTE`), and
    ``standalone=True`` adds each attack's own robust accuracy. The first ``check_examples``
    examples are also used for the gradient-masking checks (with transfer from ``source`` when
    given); a check warns when it goes the wrong way by more than ``margin`` of the examples (at
    least one). ``batch_size`` fixes the chunks, the unit of batching, seeding, process sharding
    (``context`` from :func:`hmcam.core.distributed.setup_distributed`) and saving (``state_dir``:
    resume from, and save to, that folder). ``callback(chunk, stage)`` is called after each stage.
    """
    margin = check_unit_interval("margin", margin)
    config = resolve_config(
        model,
        images,
        labels,
        attacks,
        suite=suite,
        eps=eps,
        norm=norm,
        steps=steps,
        restarts=restarts,
        alpha=alpha,
        batch_size=batch_size,
        seed=seed,
        standalone=standalone,
        check_examples=check_examples,
        source=source,
    )
    if context is None:
        context = DistributedContext(0, 1, 0, images.device, None)
    evaluation = Cascade(
        model,
        images,
        labels,
        config,
        source,
        context,
        None if state_dir is None else Path(state_dir),
        progress,
        callback,
        float(margin),
    )
    return evaluation.run()
