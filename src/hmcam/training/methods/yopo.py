"""YOPO-m-n (Zhang et al., 2019, "You Only Propagate Once"): adversary updates through the first layer alone.

Per minibatch, m full forward and backward passes each give the co-state at the first layer's output,
and n adversary updates through the first layer alone follow each; one optimizer step. As in the
authors' code, which the paper departs from, the first layer also keeps the full passes' gradient and
every parameter's rate is ``lr / m``. The algorithm, these choices and the cost ``m (1 + s)``:
docs/training.md, "YOPO-m-n".
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

from hmcam.core.distributed import DistributedContext, all_reduce_sum, no_sync, unwrap_model
from hmcam.core.validate import check_positive_float, check_positive_int
from hmcam.models.split import FirstLayerSplit, split_first_layer
from hmcam.training.methods.base import Batch, MethodOutput, MethodSetup, StepContext, TrainingMethod
from hmcam.training.methods.fast import global_batch_noise
from hmcam.training.methods.registry import register_method
from hmcam.training.threat import CIFAR_LIKE, MNIST_LIKE, Threat, fill_defaults

#: (m, n) by threat model: the authors' YOPO-5-10 on MNIST and YOPO-5-3 on CIFAR-10.
PASSES_AND_STEPS: dict[Threat, tuple[int, int]] = {MNIST_LIKE: (5, 10), CIFAR_LIKE: (5, 3)}
#: Salt of YOPO's random starts (see :func:`~hmcam.training.methods.fast.global_batch_noise`).
YOPO_STREAM = 0x796F706F


def _kernel(module: nn.Module) -> Tensor | None:
    """The module's weight when it is a matrix or a kernel (two or more dimensions), else None."""
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, Tensor) and weight.dim() >= 2 else None


def multiply_adds(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """The multiply-adds of one example's forward pass in each module with a weight matrix or kernel.

    Convolutions and linear layers count their output elements times the weight's size per output
    channel; modules without a weight of two or more dimensions (activations, batch norm) are left
    out. The pass runs on a zero image of shape ``input_shape`` in eval mode without gradients; the
    model's mode is restored. Keys are names in ``model.named_modules()``.
    """
    names = {module: name for name, module in model.named_modules()}
    counts: dict[str, int] = {}

    def count(module: nn.Module, inputs: Any, output: Tensor) -> None:
        weight = _kernel(module)
        assert weight is not None  # only modules with a kernel are hooked
        counts[names[module]] = counts.get(names[module], 0) + output.numel() * weight[0].numel()

    handles = [module.register_forward_hook(count) for module in names if _kernel(module) is not None]
    was_training = model.training
    parameter = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return counts


def measure_first_layer_share(model: nn.Module, input_shape: Sequence[int], layer_name: str | None = None) -> float:
    """The first layer's share of ``model``'s multiply-adds (:func:`multiply_adds`): s of YOPO's cost.

    ``layer_name`` names the first layer (default: the one :func:`~hmcam.models.split.split_first_layer`
    finds). A first layer of a kind not counted is charged as a whole pass: an upper bound.
    """
    network = unwrap_model(model)
    if layer_name is None:
        layer_name = split_first_layer(network, input_shape).layer_name
    counts = multiply_adds(network, input_shape)
    own = counts.get(layer_name, 0)
    return own / sum(counts.values()) if own else 1.0


def _authors_settings(threat: Threat) -> dict[str, Any] | None:
    """The authors' eps, alpha, m and n for a threat model (YOPO-5-10 on MNIST, 5-3 on CIFAR), or None."""
    if threat not in PASSES_AND_STEPS:
        return None
    full_passes, layer_steps = PASSES_AND_STEPS[threat]
    return {"eps": threat.eps, "alpha": threat.alpha, "full_passes": full_passes, "layer_steps": layer_steps}


@register_method
class YOPOTraining(TrainingMethod):
    """YOPO-m-n adversarial training ("You Only Propagate Once", Zhang et al. 2019), as the authors' code runs it.

    ``full_passes`` is m, ``layer_steps`` n, ``alpha`` the adversary's step through the first layer
    and ``eps`` the radius; unset, they take the authors' settings for the dataset: YOPO-5-10 with
    eps = 0.3 and alpha = 0.01 on MNIST-like data, YOPO-5-3 with 8/255 and 2/255 on CIFAR. The
    module docstring says how the first layer's gradient, the learning rate and the cost are treated.
    """

    name = "yopo"
    adversarial = True

    def __init__(
        self,
        *,
        dataset: str | None = None,
        eps: float | None = None,
        alpha: float | None = None,
        full_passes: int | None = None,
        layer_steps: int | None = None,
    ) -> None:
        super().__init__(dataset=dataset)
        values = fill_defaults(
            dataset,
            {"eps": eps, "alpha": alpha, "full_passes": full_passes, "layer_steps": layer_steps},
            "dataset {dataset!r} has no YOPO defaults; give {missing} explicitly",
            _authors_settings,
        )
        self.eps: float = check_positive_float("eps", values["eps"])
        self.alpha = check_positive_float("alpha", values["alpha"])
        self.full_passes = check_positive_int("full_passes", values["full_passes"])
        self.layer_steps = check_positive_int("layer_steps", values["layer_steps"])
        self.split: FirstLayerSplit | None = None
        #: The first layer's share of the network's multiply-adds, measured in :meth:`setup`.
        self.first_layer_share: float | None = None
        self.seed, self.rank, self.world_size = 0, 0, 1
        self.distributed: DistributedContext | None = None

    @override
    def setup(self, setup: MethodSetup) -> None:
        """Split the network after its first layer, check that part is affine and measure its share of the cost."""
        self.split = split_first_layer(setup.model, setup.input_shape)
        parameter = next(setup.model.parameters())
        # A private generator: the probe must not move the training's random streams.
        generator = torch.Generator().manual_seed(0)
        probes = torch.rand((2, 2, *setup.input_shape), generator=generator)
        u, v = probes.to(device=parameter.device, dtype=parameter.dtype)
        with torch.no_grad():
            first = self.split.first
            gap = (first(u) + first(v) - first(torch.zeros_like(u)) - first(u + v)).abs().max().item()
            size = first(u + v).abs().max().item()
        if gap > 1e-4 * max(size, 1.0):
            raise ValueError(
                f"YOPO needs a network whose part up to its first layer {self.split.layer_name!r} is affine in the "
                f"input (normalization, then a convolution or linear layer); this one is not (gap {gap:.3g})"
            )
        self.first_layer_share = measure_first_layer_share(setup.model, setup.input_shape, self.split.layer_name)
        self.seed, self.rank, self.world_size = setup.seed, setup.distributed.rank, setup.distributed.world_size
        self.distributed = setup.distributed

    @override
    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Every parameter at ``lr_scale = 1 / m``, the authors' rate for both their optimizers."""
        return [{"params": list(model.parameters()), "lr_scale": 1.0 / self.full_passes}]

    @override
    def hyperparameters(self) -> dict[str, float | int]:
        """The base settings plus ``eps``, ``alpha``, m (``full_passes``) and n (``layer_steps``)."""
        return {
            **super().hyperparameters(),
            "eps": self.eps,
            "alpha": self.alpha,
            "full_passes": self.full_passes,
            "layer_steps": self.layer_steps,
        }

    @override
    def passes_per_batch(self, network: nn.Module | None = None, input_shape: tuple[int, ...] | None = None) -> float:
        """``m (1 + s)``: m full passes with the input gradient and m first-layer passes, s the first layer's share.

        s is measured on ``network``, fed pixels of ``input_shape`` ``(C, H, W)``, when it is given
        (before :meth:`setup` too), else it is the share :meth:`setup` measured; with neither the
        cost is unknown, a RuntimeError.
        """
        if network is not None:
            if input_shape is None:
                raise ValueError("YOPO measures its cost on the network: give the network's input_shape (C, H, W) too")
            share = measure_first_layer_share(network, input_shape)
        elif self.first_layer_share is None:
            raise RuntimeError(
                "YOPO's cost depends on the network's first layer: call setup() first, or pass the network and "
                "its input_shape"
            )
        else:
            share = self.first_layer_share
        return self.full_passes * (1 + share)

    def _split(self) -> FirstLayerSplit:
        if self.split is None:
            raise RuntimeError("YOPO splits the network in setup(): call setup() first")
        return self.split

    @override
    def train_step(self, model: nn.Module, optimizer: Optimizer, batch: Batch, context: StepContext) -> None:
        """YOPO-m-n on a minibatch: m full passes, each followed by n updates of eta; one optimizer step."""
        split = self._split()
        images, labels, _ = batch
        noise = global_batch_noise(
            images,
            seed=self.seed,
            epoch=context.epoch,
            batch=context.batch,
            stream=YOPO_STREAM,
            rank=self.rank,
            world_size=self.world_size,
        )
        eta = (images + self.eps * noise).clamp(0, 1) - images
        first = split.first_parameters()
        extra = [torch.zeros_like(parameter) for parameter in first]
        optimizer.zero_grad(set_to_none=True)
        for index in range(self.full_passes):
            eta = eta.detach().requires_grad_(True)
            synchronized = index == self.full_passes - 1
            with contextlib.nullcontext() if synchronized else no_sync(model), split.capture() as captured:
                logits = model(images + eta)
                loss = F.cross_entropy(logits, labels)
                loss.backward()  # type: ignore[no-untyped-call]  # Tensor.backward has no annotations
            output = captured.value
            assert output is not None and output.grad is not None and eta.grad is not None  # both took part
            # dCE/dh = -p, in the layout of h (channels-last), where the first layer's kernels are fastest.
            towards_output = torch.empty_like(output).copy_(output.grad)
            context.record(MethodOutput(loss, logits, {}), labels)
            # With f0 affine, dH/deta = J^T p = -dCE/deta at every eta: each update steps along -sign(dH/deta).
            ascent = eta.grad.sign()
            eta = eta.detach()
            for _ in range(self.layer_steps):
                eta = (eta + self.alpha * ascent).clamp(-self.eps, self.eps)
                eta = (images + eta).clamp(0, 1) - images
            # The gradient of -H = -sum(f0(x + eta) * p) at the final eta, for f0's parameters only.
            hamiltonian = torch.autograd.grad(split.first(images + eta), first, grad_outputs=towards_output)
            for total, gradient in zip(extra, hamiltonian, strict=True):
                total += gradient
        self._add_averaged(first, extra)
        optimizer.step()
        context.add_passes(self.passes_per_batch())

    def _add_averaged(self, parameters: list[nn.Parameter], gradients: list[Tensor]) -> None:
        """Add ``gradients``, averaged over the processes as DistributedDataParallel averages, to the parameters'."""
        flat = torch.cat([gradient.reshape(-1) for gradient in gradients])
        if self.distributed is not None and self.distributed.enabled:
            flat = all_reduce_sum(flat, self.distributed) / self.distributed.world_size
        for parameter, gradient in zip(parameters, torch.split(flat, [p.numel() for p in parameters]), strict=True):
            assert parameter.grad is not None  # every full pass back-propagated into the first layer
            parameter.grad += gradient.view_as(parameter.grad)
