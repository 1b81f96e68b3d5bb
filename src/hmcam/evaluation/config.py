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

from hmcam.attacks import get_attack
from hmcam.attacks.norms import NORMS
from hmcam.core.validate import check_flag, check_non_negative_int, check_positive_float, check_positive_int
from hmcam.evaluation.runner import build_attack, gradient_cost, is_iterative, is_random

#: The attacks of ``hmcam eval`` by default, as given (they run cheapest first).
DEFAULT_ATTACKS = ("fgsm", "pgd", "mpgd", "cwlinf")
#: The attack whose step count the masking check halves, when the evaluation includes it.
HALF_STEPS_ATTACK = "pgd"
#: The attack that crafts transfer examples on the source model.
TRANSFER_ATTACK = "pgd"
#: Configuration keys that follow from the others (and from the attack classes).
DERIVED_SETTINGS = ("runs", "iterative", "costs", "half_attack", "half_steps", "transfer_attack")


@dataclass(frozen=True)
class Stage:
    """One step of a chunk's evaluation: the clean pass, a cascade run, a standalone completion or a check.

    ``kind`` is ``"clean"``, ``"attack"`` (restart ``restart`` of attack ``attack``, an index into
    the run order, in the cascade), ``"complete"`` (the same run on the examples that an earlier
    attack had fooled), ``"half"`` (the half-steps check of attack ``attack``) or ``"transfer"``.
    """

    kind: str
    attack: int = -1
    restart: int = 0

    def label(self, attacks: Sequence[str]) -> str:
        """A readable, stable name of the stage (also an input of its seed)."""
        if self.kind in ("clean", "transfer"):
            return self.kind
        return f"{self.kind}:{attacks[self.attack]}:{self.restart}"


@dataclass(frozen=True)
class EvaluationConfig:
    """The resolved settings of one evaluation; a saved state must have been made with the same.

    ``attacks`` is the run order (cheapest first, ties in the order given), ``requested`` the order
    given; ``runs`` is each attack's number of runs (``restarts`` for attacks with randomness, 1 for
    deterministic ones such as FGSM), ``iterative`` and ``costs`` (gradients per run) describe them.
    ``fingerprints`` identify the data, the model and the source model.
    """

    attacks: tuple[str, ...]
    requested: tuple[str, ...]
    runs: tuple[int, ...]
    iterative: tuple[bool, ...]
    costs: tuple[int, ...]
    eps: float
    norm: str
    steps: int
    restarts: int
    alpha: float | None
    batch_size: int
    seed: int
    standalone: bool
    check_examples: int
    half_attack: str | None
    half_steps: int
    transfer_attack: str | None
    examples: int
    fingerprints: dict[str, str | None]

    @property
    def chunks(self) -> int:
        """The number of fixed chunks of ``batch_size`` examples."""
        return math.ceil(self.examples / self.batch_size)

    def stages(self) -> list[Stage]:
        """The stages every chunk goes through, in order."""
        stages = [Stage("clean")]
        for index, runs in enumerate(self.runs):
            stages += [Stage("attack", index, restart) for restart in range(runs)]
        if self.standalone or self.check_examples > 0:
            # The first attack reached every correctly classified example; there is nothing to complete.
            for index, runs in enumerate(self.runs[1:], start=1):
                stages += [Stage("complete", index, restart) for restart in range(runs)]
        if self.check_examples > 0 and self.half_attack is not None:
            stages.append(Stage("half", self.attacks.index(self.half_attack)))
        if self.check_examples > 0 and self.transfer_attack is not None:
            stages.append(Stage("transfer"))
        return stages

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values."""
        return {
            "attacks": list(self.attacks),
            "requested": list(self.requested),
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
            "half_steps": self.half_steps,
            "transfer_attack": self.transfer_attack,
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


def resolve_config(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[str],
    *,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    alpha: float | None,
    batch_size: int,
    seed: int,
    standalone: bool,
    check_examples: int,
    source: nn.Module | None,
) -> EvaluationConfig:
    """Check every argument of :func:`~hmcam.evaluation.evaluate_robustness` and resolve the run order.

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
    steps = check_positive_int("steps", steps)
    restarts = check_positive_int("restarts", restarts)
    batch_size = check_positive_int("batch_size", batch_size)
    alpha = None if alpha is None else check_positive_float("alpha", alpha)
    seed = check_non_negative_int("seed", seed)
    check_examples = check_non_negative_int("check_examples", check_examples)
    standalone = check_flag("standalone", standalone)
    requested = _check_attacks(attacks)
    probes = {}
    for name in requested:
        if not get_attack(name).uses_eps:
            raise ValueError(
                f"{name} searches for a minimal perturbation and has no eps, so it has no robust accuracy at eps; "
                "use an attack with a fixed eps (cwlinf for the CW margin)"
            )
        probes[name] = build_attack(name, model, eps=eps, norm=norm, steps=steps, alpha=alpha, seed=0)
    # Cheapest first; sorted() is stable, so equal costs keep the order given.
    order = tuple(sorted(requested, key=lambda name: gradient_cost(probes[name])))
    iterative = tuple(is_iterative(probes[name]) for name in order)
    half_candidates = [name for name, flag in zip(order, iterative, strict=True) if flag]
    half_attack = None
    if steps >= 2 and half_candidates:
        half_attack = HALF_STEPS_ATTACK if HALF_STEPS_ATTACK in order else half_candidates[0]
    return EvaluationConfig(
        attacks=order,
        requested=requested,
        runs=tuple(restarts if is_random(probes[name]) else 1 for name in order),
        iterative=iterative,
        costs=tuple(gradient_cost(probes[name]) for name in order),
        eps=eps,
        norm=norm,
        steps=steps,
        restarts=restarts,
        alpha=alpha,
        batch_size=batch_size,
        seed=seed,
        standalone=standalone,
        check_examples=min(check_examples, images.shape[0]),
        half_attack=half_attack,
        half_steps=max(1, steps // 2),
        transfer_attack=TRANSFER_ATTACK if source is not None else None,
        examples=images.shape[0],
        fingerprints={
            "data": data_fingerprint(images, labels),
            "model": model_fingerprint(model),
            "source": None if source is None else model_fingerprint(source),
        },
    )
