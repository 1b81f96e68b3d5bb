"""Split a network into its first layer and the rest, for methods that work at the first layer (YOPO).

:func:`split_first_layer` finds the first layer of any network of the zoo from one forward pass and
cuts the network's own forward pass there with hooks, so ``rest(first(x))`` equals ``model(x)``. How
it finds the layer, and what the split costs: docs/training.md, "Splitting a network at its first
layer".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


class _Stop(Exception):
    """Raised by the hook of :meth:`FirstLayerSplit.first` to end the forward pass at the first layer."""


@dataclass
class CapturedOutput:
    """The first layer's output recorded by :meth:`FirstLayerSplit.capture` during a forward pass.

    ``value`` is the latest output (None before the first forward pass); when it takes part in
    autograd its gradient is retained, so after ``backward()`` ``value.grad`` is the gradient of the
    loss at the first layer's output, the quantity YOPO's ``p`` is made of. ``outputs`` lists every
    output recorded inside the ``with`` block, in order.
    """

    outputs: list[Tensor] = field(default_factory=list)

    @property
    def value(self) -> Tensor | None:
        """The output of the latest forward pass, or None when there was none."""
        return self.outputs[-1] if self.outputs else None


def _own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


class FirstLayerSplit:
    """A network cut after its first layer: ``first(x)`` gives ``h``, ``rest(h)`` the logits.

    Built by :func:`split_first_layer`. ``layer`` is the first layer module and ``layer_name`` its
    name in ``model.named_modules()``; ``input_shape`` is the ``(C, H, W)`` pixel input that
    :meth:`rest` feeds the network (as zeros) while it substitutes ``h``.
    """

    def __init__(self, model: nn.Module, layer_name: str, input_shape: Sequence[int]) -> None:
        modules = dict(model.named_modules())
        if layer_name not in modules or layer_name == "":
            raise ValueError(f"the model has no sub-module named {layer_name!r}")
        self.model = model
        self.layer_name = layer_name
        self.layer: nn.Module = modules[layer_name]
        self.input_shape = tuple(int(n) for n in input_shape)

    def first(self, x: Tensor) -> Tensor:
        """The first layer's output for pixels ``x``: everything before it (normalization) and the layer itself."""
        found: list[Tensor] = []

        def stop(module: nn.Module, inputs: Any, output: Tensor) -> None:
            found.append(output)
            raise _Stop

        handle = self.layer.register_forward_hook(stop)
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not found:
            raise RuntimeError(f"the forward pass never called the first layer {self.layer_name!r}")
        return found[0]

    def rest(self, h: Tensor) -> Tensor:
        """The network's output when its first layer outputs ``h`` (a batch of ``h.shape[0]`` examples)."""
        used: list[bool] = []

        def replace(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
            if output.shape != h.shape:
                raise ValueError(
                    f"rest() got h of shape {tuple(h.shape)}, but {self.layer_name!r} outputs {tuple(output.shape)}"
                )
            used.append(True)
            # A copy, because networks such as VGG apply an in-place ReLU next, which must not
            # overwrite the caller's h (nor fail on it when it is a leaf that requires a gradient).
            return h.clone()

        zeros = h.new_zeros((h.shape[0], *self.input_shape))
        handle = self.layer.register_forward_hook(replace)
        try:
            logits: Tensor = self.model(zeros)
        finally:
            handle.remove()
        if len(used) != 1:
            raise RuntimeError(f"the first layer {self.layer_name!r} ran {len(used)} times in one forward pass")
        return logits

    def first_parameters(self) -> list[nn.Parameter]:
        """The first layer's parameters (YOPO updates them with their own learning rate)."""
        return list(self.layer.parameters())

    def rest_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the network outside the first layer."""
        mine = {id(p) for p in self.layer.parameters()}
        return [p for p in self.model.parameters() if id(p) not in mine]

    @contextlib.contextmanager
    def capture(self) -> Iterator[CapturedOutput]:
        """Record the first layer's output (gradient retained) in every forward pass inside the block."""
        captured = CapturedOutput()

        def record(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
            if output.requires_grad:
                output.retain_grad()
            captured.outputs.append(output)
            # The network continues on a copy: an in-place ReLU after the layer would otherwise turn
            # the recorded tensor, and its retained gradient, into those of the ReLU's output.
            return output.clone()

        handle = self.layer.register_forward_hook(record)
        try:
            yield captured
        finally:
            handle.remove()


def find_first_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    """The name of the first module with parameters of its own that a forward pass calls.

    The pass runs on one zero image of shape ``input_shape`` in eval mode without gradients, so it
    touches neither batch-norm statistics nor any random stream; the model's mode is restored.
    """
    names = {module: name for name, module in model.named_modules()}
    order: list[str] = []
    handles = [
        module.register_forward_hook(lambda m, i, o: order.append(names[m]))
        for module in names
        if _own_parameters(module)
    ]
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if not order:
        raise ValueError("the model calls no module with parameters; it has no first layer to split at")
    return order[0]


def split_first_layer(model: nn.Module, input_shape: Sequence[int], layer: str | None = None) -> FirstLayerSplit:
    """Split ``model`` (pixels ``[B, *input_shape]`` in, logits out) after its first layer.

    ``layer`` names the module to cut after (a name from ``model.named_modules()``, for example to
    take SmallCNN's ``conv1 + ReLU`` as YOPO's code does); by default it is the first module with
    parameters that the forward pass calls (:func:`find_first_layer`). A DistributedDataParallel
    wrapper is unwrapped: the split works on the network, whose hooks the wrapper's forward also fires.
    """
    if isinstance(model, DistributedDataParallel):
        model = model.module
    shape = tuple(int(n) for n in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
    name = find_first_layer(model, shape) if layer is None else layer
    return FirstLayerSplit(model, name, shape)
