"""The plan of the equal-cost training comparison: its studies, arms, scales and each arm's epochs.

A *study* is one dataset, network and threat model with a list of method *arms*; a *scale* is a
list of studies with the seeds to repeat them. Nothing here trains: :mod:`hmcam.experiments.at_efficiency`
runs a plan. See ``docs/experiments.md`` (Adversarial training at equal cost) for the settings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hmcam.data import dataset_info
from hmcam.models import build_model
from hmcam.training import build_method

#: The attacks of the table, in the paper's column order; the worst case is over all of them.
ATTACKS = ("pgd", "mpgd", "cwlinf")
#: The suite every arm is also evaluated with; the robustness claims are judged on its number.
ROBUST_SUITE = "autoattack"
#: The figures reported per run, in table order (accuracies are fractions, time in minutes); ``worst`` is
#: the worst case over :data:`ATTACKS`, ``autoattack`` the robust accuracy under :data:`ROBUST_SUITE`,
#: ``passes`` the gradient passes and ``updates`` the weight updates (optimizer steps) per training example.
METRICS = ("clean", "pgd", "mpgd", "cwlinf", "worst", "autoattack", "train_minutes", "passes", "updates")
#: The arms a study's budget sweep trains by default: CAT, the two strongest multi-step baselines (the sweep's
#: claims) and CAT's other rivals, so that every arm of a robustness claim has its convergence measured.
SWEEP_ARMS = ("PGD-AT", "TRADES", "CAT", "Free", "YOPO")


@dataclass(frozen=True)
class Arm:
    """One training method of a study: a row label, the registered method name and its arguments.

    ``epochs`` fixes the run's length (the paper's settings); None derives it from the study's
    budget. ``overrides`` are further :class:`~hmcam.training.TrainConfig` fields of this arm only
    (its learning rate, schedule or milestones).
    """

    label: str
    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A dataset, network and L-inf threat model, the arms trained on it and how they are scored.

    ``budget`` is the gradient passes per training example every arm without its own ``epochs``
    gets; ``train`` holds the :class:`~hmcam.training.TrainConfig` fields shared by all arms
    (batch size, learning rate, schedule, subset sizes, ``model_options``). ``sweep`` lists the budgets
    (passes per example, ``budget`` among them) at which the arms labelled in ``sweep_arms`` are also
    trained (empty: no sweep). Robustness is measured on the first
    ``robust_examples`` test images with ``attack_steps`` steps and step ``attack_alpha`` (None:
    each attack's own rule), ``eval_batch_size`` images at a time; clean accuracy on ``test_limit``
    images (None: the whole test set).
    """

    name: str
    dataset: str
    model: str
    eps: float
    arms: tuple[Arm, ...]
    budget: float | None = None
    train: dict[str, Any] = field(default_factory=dict)
    test_limit: int | None = None
    robust_examples: int = 1000
    attack_steps: int = 20
    attack_alpha: float | None = None
    eval_batch_size: int = 128
    reference: str = "PGD-AT"
    sweep: tuple[float, ...] = ()
    sweep_arms: tuple[str, ...] = SWEEP_ARMS


@dataclass(frozen=True)
class Scale:
    """A named set of studies and the seeds each arm is trained with."""

    name: str
    description: str
    studies: tuple[Study, ...]
    seeds: tuple[int, ...]


def _equal_cost_arms(
    eps: float, steps: int, replays: int, yopo: tuple[int, int], cat: tuple[int, int]
) -> tuple[Arm, ...]:
    attack = {"eps": eps, "alpha": 2.5 * eps / steps, "steps": steps}
    return (
        Arm("natural", "natural"),
        Arm("PGD-AT", "pgd", attack),
        Arm("Free", "free", {"eps": eps, "replays": replays}),
        Arm("YOPO", "yopo", {"eps": eps, "alpha": 2 * eps / yopo[1], "full_passes": yopo[0], "layer_steps": yopo[1]}),
        # Fast AT's own schedule is the cyclic one (Wong et al. 2020).
        Arm("fast", "fast", {"eps": eps}, overrides={"schedule": "cyclic"}),
        Arm("TRADES", "trades", {**attack, "beta": 6.0}),
        Arm("CAT", "cat", {"eps": eps, "replays": cat[0], "chain_steps": cat[1]}),
        Arm("CAT-CE", "cat-ce", {"eps": eps, "replays": cat[0], "chain_steps": cat[1]}),
    )


def _paper_cifar_arms(eps: float) -> tuple[Arm, ...]:
    # Section 5.3: PGD-10 AT 105 epochs at 0.05 decayed at 79, 90, 100; Free-8 and YOPO-5-3 40 epochs at 0.2
    # decayed at 30 and 36. CAT's epochs are N / (T K) (Algorithm 3) with PGD-AT's schedule scaled to them.
    pgd_schedule = {"lr": 0.05, "milestones": (79, 90, 100)}
    short_schedule = {"lr": 0.2, "milestones": (30, 36)}
    cat_schedule = {"lr": 0.05, "milestones": (79 / 105, 90 / 105, 100 / 105)}
    return (
        Arm("PGD-AT", "pgd", {"eps": eps, "alpha": 2 / 255, "steps": 10}, 105, pgd_schedule),
        Arm("Free", "free", {"eps": eps, "replays": 8}, 40, short_schedule),
        Arm("YOPO", "yopo", {"eps": eps, "alpha": 2 / 255, "full_passes": 5, "layer_steps": 3}, 40, short_schedule),
        Arm("fast", "fast", {"eps": eps, "alpha": 10 / 255}, 15, {"lr": 0.2, "schedule": "cyclic"}),
        Arm("TRADES", "trades", {"eps": eps, "alpha": 2 / 255, "steps": 10, "beta": 6.0}, 105, pgd_schedule),
        Arm("CAT", "cat", {"eps": eps, "replays": 4, "chain_steps": 1}, 26, cat_schedule),
        Arm("CAT-CE", "cat-ce", {"eps": eps, "replays": 4, "chain_steps": 1}, 26, cat_schedule),
    )


def _paper_mnist_arms() -> tuple[Arm, ...]:
    # Section 5.3, Table 7: PGD-40 AT 55 epochs at 0.1 decayed at 45; Free-10 and CAT on the same schedule
    # divided by their replays.
    schedule = {"lr": 0.1, "milestones": (45 / 55,)}
    return (
        Arm("PGD-AT", "pgd", {"eps": 0.3, "alpha": 0.01, "steps": 40}, 55, schedule),
        Arm("Free", "free", {"eps": 0.3, "replays": 10}, 6, schedule),
        Arm("CAT", "cat", {"eps": 0.3, "replays": 4, "chain_steps": 1}, 14, schedule),
        Arm("CAT-CE", "cat-ce", {"eps": 0.3, "replays": 4, "chain_steps": 1}, 14, schedule),
    )


#: The ``small`` scale: the MLP's hidden widths, the main budget, the sweep and the AutoAttack images. The sweep
#: brackets the main budget: its runs at 80 passes measure whether the arms had converged at 40
#: (:data:`~hmcam.experiments.at_efficiency_claims.CONVERGED_GAIN`), those at 20 what half the budget gives.
SMALL_HIDDEN = (128,)
SMALL_BUDGET = 40
SMALL_SWEEP = (20, 40, 80)
SMALL_ROBUST = 200
SMALL_DESCRIPTION = (
    f"2 CPU cores: Fashion-MNIST (60k / 10k), MLP {'-'.join(map(str, SMALL_HIDDEN))}, eps 0.1, "
    f"{SMALL_BUDGET} passes per example ({', '.join(SWEEP_ARMS)} also at {', '.join(map(str, SMALL_SWEEP))}), "
    f"cosine schedule, AutoAttack on {SMALL_ROBUST} test images, 5 seeds"
)

_CIFAR_TRAIN = {"batch_size": 256, "weight_decay": 5e-4, "momentum": 0.9, "augment": "crop-flip", "eval_subset": 1000}

#: The scales of ``hmcam experiment at-efficiency``.
SCALES: dict[str, Scale] = {
    "smoke": Scale(
        "smoke",
        "seconds: 192 Fashion-MNIST images, an MLP, eps 0.1, a budget of 6 passes per example (sweep 3, 6, 9), 2 seeds",
        (
            Study(
                "fashion-mnist-mlp",
                "fashion-mnist",
                "mlp",
                0.1,
                _equal_cost_arms(0.1, steps=2, replays=2, yopo=(2, 2), cat=(2, 1)),
                budget=6,
                # Too short to learn much: the collapse warning would only be noise.
                train={
                    "batch_size": 64,
                    "lr": 0.05,
                    "schedule": "cosine",
                    "train_limit": 192,
                    "eval_subset": 32,
                    "eval_steps": 3,
                    "collapse_epochs": 0,
                    "model_options": {"hidden": [32]},
                },
                test_limit=128,
                robust_examples=32,
                attack_steps=3,
                sweep=(3, 6, 9),
            ),
        ),
        (0, 1),
    ),
    "small": Scale(
        "small",
        SMALL_DESCRIPTION,
        (
            Study(
                "fashion-mnist-mlp",
                "fashion-mnist",
                "mlp",
                0.1,
                _equal_cost_arms(0.1, steps=7, replays=8, yopo=(5, 3), cat=(4, 1)),
                budget=SMALL_BUDGET,
                train={
                    "batch_size": 128,
                    "lr": 0.05,
                    "schedule": "cosine",
                    "eval_subset": 500,
                    "eval_steps": 10,
                    "model_options": {"hidden": list(SMALL_HIDDEN)},
                },
                robust_examples=SMALL_ROBUST,
                attack_steps=20,
                # One batch: AutoAttack's per-iteration overhead, not the MLP, dominates its time.
                eval_batch_size=SMALL_ROBUST,
                sweep=SMALL_SWEEP,
            ),
        ),
        (0, 1, 2, 3, 4),
    ),
    "paper": Scale(
        "paper",
        "the paper's settings (Section 5.3): CIFAR-10 PreAct-ResNet18 and WRN-34-10 at eps 8/255, "
        "MNIST SmallCNN at eps 0.3; days on one GPU",
        (
            Study(
                "cifar10-preact-resnet18",
                "cifar10",
                "preact_resnet18",
                8 / 255,
                _paper_cifar_arms(8 / 255),
                train=_CIFAR_TRAIN,
                robust_examples=10000,
                attack_steps=20,
                attack_alpha=2 / 255,
            ),
            Study(
                "cifar10-wrn34-10",
                "cifar10",
                "wrn34_10",
                8 / 255,
                _paper_cifar_arms(8 / 255),
                train=_CIFAR_TRAIN,
                robust_examples=10000,
                attack_steps=20,
                attack_alpha=2 / 255,
            ),
            Study(
                "mnist-smallcnn",
                "mnist",
                "smallcnn",
                0.3,
                _paper_mnist_arms(),
                train={"batch_size": 256, "weight_decay": 5e-4, "momentum": 0.9, "eval_subset": 1000},
                robust_examples=10000,
                attack_steps=40,
                attack_alpha=0.01,
            ),
        ),
        (0, 1, 2, 3, 4),
    ),
}


def restrict(
    scale: Scale,
    *,
    seeds: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    budget: float | None = None,
    train_limit: int | None = None,
    sweep: Sequence[float] | None = None,
) -> Scale:
    """``scale`` with other seeds, only the arms labelled or named in ``methods``, another budget, subset or sweep.

    Every name in ``methods`` must match an arm (by label, case-insensitive, or by method name) of
    every study; unknown names are an error that lists the arms. The sweep keeps only the arms kept.
    """
    if seeds is not None:
        if not seeds or len(set(seeds)) != len(seeds) or any(isinstance(s, bool) or s < 0 for s in seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)}")
    if budget is not None and (not math.isfinite(budget) or budget <= 0):
        raise ValueError(f"budget must be a positive number of passes per example, got {budget}")
    if train_limit is not None and train_limit < 1:
        raise ValueError(f"train_limit must be >= 1, got {train_limit}")
    if sweep is not None and any(not math.isfinite(b) or b <= 0 for b in sweep):
        raise ValueError(f"sweep budgets must be positive numbers of passes per example, got {list(sweep)}")
    studies = []
    for study in scale.studies:
        arms = study.arms
        if methods is not None:
            wanted = {name.lower() for name in methods}
            known = {arm.label.lower() for arm in arms} | {arm.method for arm in arms}
            unknown = sorted(wanted - known)
            if unknown:
                raise ValueError(f"unknown method(s) {unknown} for {study.name}; choose from {[a.label for a in arms]}")
            arms = tuple(arm for arm in arms if arm.label.lower() in wanted or arm.method in wanted)
        train = {**study.train, **({"train_limit": train_limit} if train_limit is not None else {})}
        kept = tuple(label for label in study.sweep_arms if label in {arm.label for arm in arms})
        studies.append(
            dataclasses.replace(
                study,
                arms=arms,
                train=train,
                budget=study.budget if budget is None else budget,
                sweep=study.sweep if sweep is None else tuple(sweep),
                sweep_arms=kept,
            )
        )
    return dataclasses.replace(scale, studies=tuple(studies), seeds=tuple(seeds) if seeds is not None else scale.seeds)


def planned_passes(study: Study, arm: Arm) -> float:
    """The full forward+backward passes per minibatch that ``arm`` plans on ``study``'s network.

    The freshly built method answers before any setup, given a freshly built network of the study
    (YOPO's cost depends on the share of the first layer in it; the other methods ignore it).
    """
    info = dataset_info(study.dataset)
    options = study.train.get("model_options", {})
    network = build_model(study.model, num_classes=info.num_classes, in_channels=info.input_shape[0], **options)
    method = build_method(arm.method, dataset=study.dataset, **arm.kwargs)
    return method.passes_per_batch(network, tuple(info.input_shape))


def arm_epochs(study: Study, arm: Arm) -> int:
    """The epochs ``arm`` trains for: its own, else the study's budget over its passes per minibatch (at least 1)."""
    if arm.epochs is not None:
        return arm.epochs
    if study.budget is None:
        raise ValueError(f"{study.name}: arm {arm.label} has no epochs and the study no budget")
    return max(1, round(study.budget / planned_passes(study, arm)))


def budgets(study: Study) -> tuple[float | None, ...]:
    """The budgets ``study``'s runs live at: its own (the main comparison) first, then its sweep's others, ascending."""
    others = sorted(set(study.sweep) - {study.budget}) if study.sweep_arms else []
    return (study.budget, *others)


def at_budget(study: Study, budget: float | None) -> Study:
    """``study`` at ``budget``: every arm at its own budget, only its sweep arms at the sweep's other budgets."""
    if budget == study.budget:
        return study
    arms = tuple(arm for arm in study.arms if arm.label in study.sweep_arms)
    return dataclasses.replace(study, budget=budget, arms=arms)


def budget_name(budget: float | None) -> str:
    """The folder (and key prefix) of the runs at ``budget``: ``budget-B``, or ``own-epochs`` for arms' own epochs."""
    return "own-epochs" if budget is None else f"budget-{budget:g}"


def _sweep_plan(study: Study) -> list[dict[str, Any]]:
    # Every budget of the sweep (the study's own included) with the epochs of each of its arms there.
    arms = [arm for arm in study.arms if arm.label in study.sweep_arms]
    return [
        {
            "budget": budget,
            "arms": {arm.label: arm_epochs(dataclasses.replace(study, budget=budget), arm) for arm in arms},
        }
        for budget in (sorted(study.sweep) if arms else [])
    ]


def plan(scale: Scale) -> dict[str, Any]:
    """The scale as JSON, with each arm's epochs (and each sweep budget's) resolved: the run folder's configuration."""
    return {
        "kind": "experiment",
        "experiment": "at-efficiency",
        "scale": scale.name,
        "description": scale.description,
        "seeds": list(scale.seeds),
        "studies": [
            {
                **{k: v for k, v in dataclasses.asdict(study).items() if k != "arms"},
                "arms": [{**dataclasses.asdict(arm), "epochs": arm_epochs(study, arm)} for arm in study.arms],
                "sweep": _sweep_plan(study),
            }
            for study in scale.studies
        ],
    }
