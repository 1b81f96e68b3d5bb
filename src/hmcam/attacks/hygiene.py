"""Model hygiene during an attack: eval mode, frozen parameters, everything restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with parameters not requiring grad, and restore both on exit.

    BatchNorm and Dropout in train mode during an attack, and a mode left changed afterwards, are the
    most reported bugs of attack libraries; frozen parameters mean no ``.grad`` is ever written to
    them. Gradients with respect to the input stay enabled even when the caller is under
    ``torch.no_grad()``. Restoration also happens when the attack raises.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        model.eval()
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        with torch.enable_grad():
            yield model
    finally:
        for module, training in modes:
            module.training = training
        for parameter, requires_grad in flags:
            parameter.requires_grad_(requires_grad)
