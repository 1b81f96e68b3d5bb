"""The settings of a robust evaluation: every argument checked, the attacks in run order, the stages.

:func:`resolve_config` turns the arguments of :func:`hmcam.evaluation.evaluate_robustness` into an
:class:`EvaluationConfig` (errors name the argument); :meth:`EvaluationConfig.stages` lists the
:class:`Stage` objects every chunk of examples goes through. The configuration is saved with the
resumable state (:mod:`hmcam.evaluation.state`), which must match it exactly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hmcam.attacks import ATTACK_REGISTRY, Attack
from hmcam.attacks.norms import NORMS
from hmcam.core.validate import check_flag, check_non_negative_int, check_positive_float, check_positive_int
from hmcam.evaluation.runner import gradient_cost, is_iterative, is_random
from hmcam.evaluation.suites import (
    CUSTOM,
    DEFAULT_RESTARTS,
    DEFAULT_STEPS,
    DEFAULT_SUITE,
    PAPER_ATTACKS,
    SUITES,
    AttackSpec,
    attack_list,
    get_suite,
)

#: The attacks of the ``paper`` suite, as given (they run cheapest first).
DEFAULT_ATTACKS = PAPER_ATTACKS
#: The attack whose step count the masking check halves, when the evaluation includes it.
HALF_STEPS_ATTACK = "pgd"
#: The attack that crafts transfer examples on the source model, for a suite that does not fix it.
TRANSFER_ATTACK = "pgd"
#: Configuration keys that follow from the others (and from the attack classes).
DERIVED_SETTINGS = ("settings", "runs", "iterative", "costs", "half_attack", "half_steps", "transfer")


@dataclass(frozen=True)
class EvaluationConfig:
    """The resolved settings of one evaluation; a saved state must have been made with the same.

    ``suite`` names the evaluation (a name of :data:`~hmcam.evaluation.suites.SUITES`, or ``custom``
    for a list of attacks); ``specs`` are its attacks in run order (a suite's own order, or cheapest
    first for the ``paper`` suite and a list), ``requested`` their labels in the order given.
    ``iterative`` and ``costs`` (gradients per run) describe them. ``steps`` and ``restarts`` are
    those of a tunable suite (None for a fixed one). ``half`` is the attack of the half-steps
    masking check, ``transfer`` the attack run on the source model. ``fingerprints`` identify the
    data, the model and the source model.
    """

    suite: str
    specs: tuple[AttackSpec, ...]
    requested: tuple[str, ...]
    iterative: tuple[bool, ...]
    costs: tuple[int, ...]
    eps: float
    norm: str
    steps: int | None
    restarts: int | None
    alpha: float | None
    batch_size: int
    seed: int
    standalone: bool
    check_examples: int
    half: AttackSpec | None
    transfer: AttackSpec | None
    examples: int
    fingerprints: dict[str, str | None]

    @property
    def attacks(self) -> tuple[str, ...]:
        """The attacks' labels in run order."""
        return tuple(spec.label for spec in self.specs)

    @property
    def runs(self) -> tuple[int, ...]:
        """Each attack's number of runs in run order."""
        return tuple(spec.runs for spec in self.specs)

    @property
    def half_attack(self) -> str | None:
        """The label of the half-steps check's attack, if that check runs."""
        return None if self.half is None else self.half.label

    @property
    def chunks(self) -> int:
        """The number of fixed chunks of ``batch_size`` examples."""
        return math.ceil(self.examples / self.batch_size)

    def describe(self) -> str:
        """One line naming the suite and its settings, for reports."""
        if self.suite in SUITES:
            text = f"suite {self.suite} ({SUITES[self.suite].description})"
        else:
            text = f"attacks {', '.join(self.attacks)}"
        if self.steps is not None:
            text += f", {self.steps} steps, {self.restarts} restart(s)"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values."""
        return {
            "suite": self.suite,
            "attacks": list(self.attacks),
            "requested": list(self.requested),
            "settings": [spec.to_dict() for spec in self.specs],
            "runs": list(self.runs),
            "iterative": list(self.iterative),
            "costs": list(self.costs),
            "eps": self.eps,
            "norm": self.norm,
            "steps": self.steps,
            "restarts": self.restarts,
            "alpha": self.alpha,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "standalone": self.standalone,
            "check_examples": self.check_examples,
            "half_attack": self.half_attack,
            "half_steps": None if self.half is None else self.half.options["steps"],
            "transfer": None if self.transfer is None else self.transfer.to_dict(),
            "examples": self.examples,
            "fingerprints": dict(self.fingerprints),
        }


def _digest(named: Sequence[tuple[str, Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in named:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    """A short digest of every tensor of ``model``'s state dict (names, dtypes, shapes and values)."""
    return _digest(sorted(model.state_dict().items()))


def data_fingerprint(images: Tensor, labels: Tensor) -> str:
    """A short digest of the examples, their order and their labels."""
    # Per-example sums instead of every pixel: cheap on ImageNet-size data, and any change of examples,
    # order or labels still changes the digest.
    sums = images.detach().flatten(1).double().sum(dim=1)
    return _digest([("images", sums), ("shape", torch.tensor(images.shape)), ("labels", labels)])


def _check_attacks(attacks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(attacks, str) or not isinstance(attacks, Sequence):
        raise TypeError(f"attacks must be a sequence of attack names, got {attacks!r}")
    names = tuple(name.lower() if isinstance(name, str) else name for name in attacks)
    if not names:
        raise ValueError("give at least one attack")
    if not all(isinstance(name, str) and name for name in names):
        raise TypeError(f"attack names must be non-empty strings, got {list(attacks)!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"attacks must be distinct; {repeated} appear more than once")
    return names


def _probe(spec: AttackSpec, model: nn.Module, eps: float, norm: str) -> Attack:
    if not ATTACK_REGISTRY.lookup(spec.attack).uses_eps:
        raise ValueError(
            f"{spec.label} searches for a minimal perturbation and has no eps, so it has no robust accuracy at eps; "
            "use an attack with a fixed eps (cwlinf for the CW margin)"
        )
    return spec.build(model, eps=eps, norm=norm, seed=0)


def _resolve_specs(
    attacks: Sequence[str] | None,
    suite: str | None,
    norm: str,
    steps: int | None,
    restarts: int | None,
    alpha: float | None,
) -> tuple[str, bool, tuple[AttackSpec, ...]]:
    """The suite's name, whether it runs cheapest first, and its attacks in the order given."""
    if attacks is not None and suite is not None:
        raise ValueError("give a suite or a list of attacks, not both")
    if attacks is None:
        chosen = get_suite(DEFAULT_SUITE if suite is None else suite)
        if alpha is not None and not chosen.tunable:
            raise ValueError(
                f"suite {chosen.name!r} fixes its attacks' settings, as the reference does; alpha applies "
                "to the 'paper' and 'fast' suites and to a list of attacks"
            )
        name, cheapest_first, specs = chosen.name, chosen.cheapest_first, chosen.specs(norm, steps, restarts)
    else:
        names = _check_attacks(attacks)
        name, cheapest_first = CUSTOM, True
        specs = attack_list(
            names, DEFAULT_STEPS if steps is None else steps, DEFAULT_RESTARTS if restarts is None else restarts
        )
    if alpha is not None:
        specs = tuple(
            spec.with_options(alpha=alpha) if "alpha" in ATTACK_REGISTRY.accepts(spec.attack) else spec
            for spec in specs
        )
    return name, cheapest_first, specs


def resolve_config(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[str] | None,
    *,
    suite: str | None,
    eps: float,
    norm: str,
    steps: int | None,
    restarts: int | None,
    alpha: float | None,
    batch_size: int,
    seed: int,
    standalone: bool,
    check_examples: int,
    source: nn.Module | None,
) -> EvaluationConfig:
    """Check every argument of :func:`~hmcam.evaluation.evaluate_robustness` and resolve the suite's attacks.

    An error names the argument at fault.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if source is not None and not isinstance(source, nn.Module):
        raise TypeError(f"source must be a torch.nn.Module or None, got {type(source).__name__}")
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.dim() < 2 or images.shape[0] == 0:
        raise ValueError("images must be a float tensor [N, ...] with N >= 1")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be a 1-D tensor with one label per image ({images.shape[0]})")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    reference = next(model.parameters(), None)
    if reference is not None and reference.device != images.device:
        raise ValueError(f"the model is on {reference.device} but the images are on {images.device}")
    eps = check_positive_float("eps", eps)
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(NORMS)}")
    steps = None if steps is None else check_positive_int("steps", steps)
    restarts = None if restarts is None else check_positive_int("restarts", restarts)
    batch_size = check_positive_int("batch_size", batch_size)
    alpha = None if alpha is None else check_positive_float("alpha", alpha)
    seed = check_non_negative_int("seed", seed)
    check_examples = check_non_negative_int("check_examples", check_examples)
    standalone = check_flag("standalone", standalone)
    name, cheapest_first, given = _resolve_specs(attacks, suite, norm, steps, restarts, alpha)
    tunable = name == CUSTOM or SUITES[name].tunable
    if tunable:
        steps = DEFAULT_STEPS if steps is None else steps
        restarts = DEFAULT_RESTARTS if restarts is None else restarts
    given = tuple(_fit_targets(spec, model, images) for spec in given)
    probes = {spec.label: _probe(spec, model, eps, norm) for spec in given}
    # A restart of a deterministic attack (FGSM) would repeat the first run.
    given = tuple(
        spec if is_random(probes[spec.label]) else AttackSpec(spec.label, spec.attack, spec.options, 1)
        for spec in given
    )
    # Cheapest first; sorted() is stable, so equal costs keep the order given.
    order = tuple(sorted(given, key=lambda spec: gradient_cost(probes[spec.label]))) if cheapest_first else given
    iterative = tuple(is_iterative(probes[spec.label]) for spec in order)
    return EvaluationConfig(
        suite=name,
        specs=order,
        requested=tuple(spec.label for spec in given),
        iterative=iterative,
        costs=tuple(gradient_cost(probes[spec.label]) for spec in order),
        eps=eps,
        norm=norm,
        steps=steps if tunable else None,
        restarts=restarts if tunable else None,
        alpha=alpha,
        batch_size=batch_size,
        seed=seed,
        standalone=standalone,
        check_examples=min(check_examples, images.shape[0]),
        half=_half_check(order, iterative),
        transfer=None if source is None else _transfer(order, steps if tunable else None, alpha),
        examples=images.shape[0],
        fingerprints={
            "data": data_fingerprint(images, labels),
            "model": model_fingerprint(model),
            "source": None if source is None else model_fingerprint(source),
        },
    )


def _half_check(order: tuple[AttackSpec, ...], iterative: tuple[bool, ...]) -> AttackSpec | None:
    """The half-steps check's attack: PGD if present, else the first iterative attack, at half its steps."""
    candidates = [spec for spec, flag in zip(order, iterative, strict=True) if flag and "steps" in spec.options]
    preferred = [spec for spec in candidates if spec.attack == HALF_STEPS_ATTACK]
    if not candidates:
        return None
    chosen = (preferred or candidates)[0]
    if int(chosen.options["steps"]) < 2:
        return None
    return chosen.with_options(steps=int(chosen.options["steps"]) // 2)


def _transfer(order: tuple[AttackSpec, ...], steps: int | None, alpha: float | None) -> AttackSpec:
    """The transfer check's attack: PGD with the evaluation's steps, or a fixed suite's first attack."""
    if steps is None:
        return order[0]
    options: dict[str, Any] = {"steps": steps} if alpha is None else {"steps": steps, "alpha": alpha}
    return AttackSpec(TRANSFER_ATTACK, TRANSFER_ATTACK, options)


def _fit_targets(spec: AttackSpec, model: nn.Module, images: Tensor) -> AttackSpec:
    """A suite's targeted attack with at most ``classes - 1`` target classes (the reference needs 10 classes)."""
    wanted = spec.options.get("n_target_classes")
    if wanted is None:
        return spec
    with torch.no_grad():
        classes = int(model(images[:1]).shape[-1])
    return spec.with_options(n_target_classes=min(int(wanted), max(classes - 1, 1)))
