"""Contrastive Adversarial Training (Algorithm 3 with the J_cd objective of Eq. 15-16) and its CE-driven twin.

Every training example keeps a chain ``theta`` in its eps-ball and a momentum ``v``; each minibatch
is used for T cross-entropy updates on the chains' states, and before each of them every chain of the
minibatch takes K momentum steps up J_cd (``cat``) or cross-entropy (``cat-ce``). The algorithm:
docs/cat.md, "The algorithm as implemented"; what the paper leaves open or gets wrong (Eq. 16 is not
the gradient of Eq. 15) and what this module does: docs/cat.md, "Reading Algorithm 3 and Eq. 15-16".
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim import Optimizer
from typing_extensions import override

from hmcam.attacks.ball import Ball
from hmcam.attacks.hygiene import attack_mode
from hmcam.attacks.norms import get_norm
from hmcam.core.distributed import unwrap_model
from hmcam.core.validate import (
    check_non_negative_float,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
)
from hmcam.training.examples import ExampleState
from hmcam.training.methods.base import Batch, MethodOutput, MethodSetup, StepContext, TrainingMethod
from hmcam.training.methods.registry import register_method
from hmcam.training.threat import fill_defaults

#: The chain gradients of ``cat``: Eq. 16 as printed, or the true gradient of Eq. 15.
GRADIENTS = ("paper", "exact")
#: alpha's default in units of eps: v lives in [-eps, eps], so alpha |g| / eps is what steers the chain, and a
#: per-pixel gradient of 1 / 300 (the median on LeNet / Fashion-MNIST is 2e-3 to 4e-3) moves v by eps.
ALPHA_PER_EPS = 300.0
#: A forward pass without a backward one, in forward+backward passes (a backward costs about two forwards).
FORWARD_PASS = 1 / 3
#: Names of the per-example tensors: the chain as a perturbation theta - x, its momentum, the epoch it started.
CHAIN, MOMENTUM, STARTED = "chain", "momentum", "chain_started"
#: The prefix of omega~'s tensors in the shared state.
PREVIOUS = "previous."


def initial_perturbation(seed: int, indices: Tensor, epoch: int, shape: tuple[int, ...], eps: float) -> Tensor:
    """``v_0 ~ U(-eps, eps)`` of shape ``[len(indices), *shape]`` for chains starting in ``epoch`` (on the CPU).

    Row i comes from a generator seeded by ``(seed, indices[i], epoch)`` alone, so an example draws
    the same start whichever process, minibatch or position in it the example has.
    """
    rows = []
    for index in indices.tolist():
        entropy = np.random.SeedSequence([seed, int(index), epoch]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator().manual_seed(int(entropy))
        rows.append(torch.rand(shape, generator=generator))
    return (2 * torch.stack(rows) - 1) * eps if rows else torch.zeros(0, *shape)


class ChainTraining(TrainingMethod):
    """Algorithm 3's loop: persistent per-example chains, K chain steps before each of T updates.

    Subclasses say what the chain climbs through :meth:`logit_gradient`; the module docstring gives
    the reading of the algorithm. Unset ``eps`` takes the dataset's default radius
    (:mod:`hmcam.training.threat`), unset ``eps_step`` equals ``eps`` (the paper's step) and unset
    ``alpha`` is ``300 eps``.
    """

    adversarial = True
    #: Whether the chain's objective needs omega~'s output at the chain's start (then omega~ is kept).
    uses_previous = False

    def __init__(
        self,
        *,
        dataset: str | None,
        eps: float | None,
        replays: int,
        chain_steps: int,
        alpha: float | None,
        eps_step: float | None,
        restart_every: int,
    ) -> None:
        super().__init__(dataset=dataset)
        error = "dataset {dataset!r} has no default threat model; give " + type(self).__name__ + " eps"
        self.eps: float = check_positive_float("eps", fill_defaults(dataset, {"eps": eps}, error)["eps"])
        self.replays = check_positive_int("replays", replays)
        self.chain_steps = check_positive_int("chain_steps", chain_steps)
        self.alpha = ALPHA_PER_EPS * self.eps if alpha is None else check_positive_float("alpha", alpha)
        self.eps_step = self.eps if eps_step is None else check_positive_float("eps_step", eps_step)
        self.restart_every = check_non_negative_int("restart_every", restart_every)
        self.seed = 0
        self._store: ExampleState | None = None

    @abstractmethod
    def logit_gradient(self, logits: Tensor, labels: Tensor, previous: Tensor | None) -> Tensor:
        """The chain's ascent direction at the logits ``[B, C]``, backpropagated to the input.

        ``previous`` is omega~'s softmax at the chain's start (None unless :attr:`uses_previous`).
        """

    @override
    def setup(self, setup: MethodSetup) -> None:
        """Register the chains, their momenta and the epoch each started (-1: never) in the per-example store."""
        setup.examples.register(CHAIN, setup.input_shape)
        setup.examples.register(MOMENTUM, setup.input_shape)
        setup.examples.register(STARTED, (), dtype=torch.int64, fill=-1)
        self._store = setup.examples
        self.seed = setup.seed

    @override
    def hyperparameters(self) -> dict[str, float | int | str]:
        """The base settings plus eps, K, alpha, the chain's step and the restart period."""
        return {
            **super().hyperparameters(),
            "eps": self.eps,
            "chain_steps": self.chain_steps,
            "alpha": self.alpha,
            "eps_step": self.eps_step,
            "restart_every": self.restart_every,
        }

    @override
    def passes_per_batch(self, network: nn.Module | None = None, input_shape: tuple[int, ...] | None = None) -> float:
        """``T (K + 1)``: T K chain steps and T updates, plus ``T / 3`` for omega~'s forwards when kept.

        Known before :meth:`setup`, whatever the network: ``network`` and ``input_shape`` are ignored.
        """
        chain_and_update = self.replays * (self.chain_steps + 1)
        return chain_and_update + (self.replays * FORWARD_PASS if self.uses_previous else 0.0)

    def chain_gradient(self, network: nn.Module, point: Tensor, labels: Tensor, previous: Tensor | None) -> Tensor:
        """The input gradient of the chain's objective at ``point``: :meth:`logit_gradient` backpropagated.

        Each example's gradient is that of its own term; call it with ``network`` in attack mode.
        """
        fed = point.detach().requires_grad_(True)
        logits = network(fed)
        direction = self.logit_gradient(logits.detach(), labels, previous)
        (gradient,) = torch.autograd.grad(logits, fed, grad_outputs=direction)
        return gradient

    def previous_output(self, network: nn.Module, point: Tensor) -> Tensor | None:
        """omega~'s softmax at ``point``, where the objective needs it; None here."""
        return None

    def remember_weights(self, network: nn.Module) -> None:  # noqa: B027
        """Called just before every optimizer step (omega~ <- omega); nothing to keep here."""

    def read_chains(self, indices: Tensor, epoch: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The perturbations theta - x and momenta of examples ``indices``, started afresh where due.

        A chain starts when its example is met for the first time, and again when ``restart_every``
        epochs have passed since it started; returns the fresh examples' mask too.
        """
        store = self._examples()
        delta = store.read(CHAIN, indices, like.device).to(like.dtype)
        momentum = store.read(MOMENTUM, indices, like.device).to(like.dtype)
        started = store.read(STARTED, indices)
        fresh = started < 0
        if self.restart_every:
            fresh |= epoch - started >= self.restart_every
        if bool(fresh.any()):
            draw = initial_perturbation(self.seed, indices[fresh], epoch, tuple(like.shape[1:]), self.eps)
            draw = draw.to(device=like.device, dtype=like.dtype)
            mask = fresh.to(like.device)
            # Algorithm 3's theta^0 = x + v_0: the one draw starts both the chain and its momentum.
            delta[mask] = draw
            momentum[mask] = draw
            store.write(STARTED, indices[fresh], torch.full((int(fresh.sum()),), epoch, dtype=torch.int64))
        return delta, momentum, fresh

    @override
    def train_step(self, model: nn.Module, optimizer: Optimizer, batch: Batch, context: StepContext) -> None:
        """T times: K chain steps for every example of the minibatch, then a CE step on the chains' states."""
        network = unwrap_model(model)
        images, labels, indices = batch
        radius = torch.full((images.shape[0], *[1] * (images.dim() - 1)), self.eps, device=images.device)
        ball = Ball(images, radius.to(images.dtype), get_norm("linf"), (0.0, 1.0), images.dtype)
        # Stored chains are perturbations: projecting puts each into the ball of this (maybe augmented) image.
        delta, momentum, fresh = self.read_chains(indices, context.epoch, images)
        point = ball.project(images + delta)
        stats: dict[str, Tensor | float] = {"chain_starts": fresh.double().mean().item()}
        for _ in range(self.replays):
            previous = self.previous_output(network, point)
            with attack_mode(network):
                for _ in range(self.chain_steps):
                    gradient = self.chain_gradient(network, point, labels, previous)
                    # v before theta, so that each of the K gradients reaches theta^K, the point trained on.
                    momentum = (momentum + self.alpha * gradient).clamp(-self.eps, self.eps)
                    point = ball.step(point, self.eps_step, momentum)
            optimizer.zero_grad(set_to_none=True)
            logits = model(point)
            loss = F.cross_entropy(logits, labels)
            loss.backward()  # type: ignore[no-untyped-call]  # Tensor.backward has no annotations
            self.remember_weights(network)
            optimizer.step()
            context.record(MethodOutput(loss, logits, stats), labels)
        store = self._examples()
        store.write(CHAIN, indices, point - images)
        store.write(MOMENTUM, indices, momentum)
        context.add_passes(self.passes_per_batch())

    def _examples(self) -> ExampleState:
        if self._store is None:
            raise RuntimeError(f"{type(self).__name__} keeps its chains in the trainer's store: call setup() first")
        return self._store


@register_method
class CATTraining(ChainTraining):
    """CAT (Algorithm 3): chains climbing J_cd (Eq. 15) by the paper's Eq. 16 or by its true gradient.

    ``replays`` is T, ``chain_steps`` K, ``alpha`` the momentum step alpha, ``eps`` the radius and
    ``eps_step`` the chain's step (the paper's eps), ``rho`` and ``lam`` the weights of Eq. 15 and
    ``gradient`` ``"paper"`` (Eq. 16: ``lam (p - y) - rho (q - y)`` at the logits) or ``"exact"``
    (``lam (p - y)``, for which rho and omega~ play no part). ``restart_every`` restarts chains every
    that many epochs (0: never; 1: Algorithm 3's per-epoch start).
    """

    name = "cat"

    def __init__(
        self,
        *,
        dataset: str | None = None,
        eps: float | None = None,
        replays: int = 4,
        chain_steps: int = 1,
        alpha: float | None = None,
        eps_step: float | None = None,
        rho: float = 1.0,
        lam: float = 2.0,
        gradient: str = "paper",
        restart_every: int = 0,
    ) -> None:
        super().__init__(
            dataset=dataset,
            eps=eps,
            replays=replays,
            chain_steps=chain_steps,
            alpha=alpha,
            eps_step=eps_step,
            restart_every=restart_every,
        )
        self.rho = check_non_negative_float("rho", rho)
        self.lam = check_positive_float("lam", lam)
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        self.gradient = gradient
        self.uses_previous = gradient == "paper"
        self.previous: dict[str, Tensor] = {}

    @override
    def hyperparameters(self) -> dict[str, float | int | str]:
        """The chain's settings plus rho, lam and the gradient's form."""
        return {**super().hyperparameters(), "rho": self.rho, "lam": self.lam, "gradient": self.gradient}

    @override
    def setup(self, setup: MethodSetup) -> None:
        """Register the chains; with the paper's gradient, omega~ starts as a copy of omega_0."""
        super().setup(setup)
        if self.uses_previous:
            self.previous = {name: value.detach().clone() for name, value in setup.model.state_dict().items()}

    @override
    def logit_gradient(self, logits: Tensor, labels: Tensor, previous: Tensor | None) -> Tensor:
        """``lam (p - y) - rho (q - y)`` (paper) or ``lam (p - y)`` (exact), p = softmax(logits), q = ``previous``."""
        target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        ascent = self.lam * (logits.softmax(dim=1) - target)
        if previous is None:
            return ascent
        return ascent - self.rho * (previous - target)

    @override
    def previous_output(self, network: nn.Module, point: Tensor) -> Tensor | None:
        """f_omega~(theta^K), omega~'s softmax at the chain's start, in eval mode; None for the exact gradient."""
        if not self.uses_previous:
            return None
        with attack_mode(network), torch.no_grad():
            logits: Tensor = functional_call(network, self.previous, (point,))
        return logits.softmax(dim=1)

    @override
    def remember_weights(self, network: nn.Module) -> None:
        """omega~ <- omega: copy every weight and buffer, just before the optimizer step."""
        if self.uses_previous:
            for name, value in network.state_dict().items():
                self.previous[name].copy_(value)

    @override
    def shared_state_dict(self) -> dict[str, Tensor]:
        """omega~ (identical on every process), under ``previous.`` names; empty for the exact gradient."""
        return {PREVIOUS + name: value.detach().clone() for name, value in self.previous.items()}

    @override
    def load_shared_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore omega~ saved by :meth:`shared_state_dict`; its names must be the network's."""
        names = {name[len(PREVIOUS) :] for name in state if name.startswith(PREVIOUS)}
        if len(names) != len(state) or names != set(self.previous):
            raise ValueError(
                f"training method {self.name!r} expects omega~ for {sorted(self.previous)}, got {sorted(state)}"
            )
        for name in names:
            self.previous[name].copy_(state[PREVIOUS + name])


@register_method
class CATCETraining(ChainTraining):
    """CAT's chains and updates with the chain climbing plain cross-entropy: the control that isolates J_cd.

    The same arguments as :class:`CATTraining` without rho, lam and gradient; with T = K = 1 and
    ``restart_every=1`` it is a one-step momentum attack from a random start, then a CE update.
    """

    name = "cat-ce"

    def __init__(
        self,
        *,
        dataset: str | None = None,
        eps: float | None = None,
        replays: int = 4,
        chain_steps: int = 1,
        alpha: float | None = None,
        eps_step: float | None = None,
        restart_every: int = 0,
    ) -> None:
        super().__init__(
            dataset=dataset,
            eps=eps,
            replays=replays,
            chain_steps=chain_steps,
            alpha=alpha,
            eps_step=eps_step,
            restart_every=restart_every,
        )

    @override
    def logit_gradient(self, logits: Tensor, labels: Tensor, previous: Tensor | None) -> Tensor:
        """``p - y``: the gradient of each example's cross-entropy at its logits."""
        return logits.softmax(dim=1) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)
