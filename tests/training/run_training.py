"""The tests' training entry point for fresh processes: ``python run_training.py CONFIG_JSON [--resume]``.

Multi-process tests start it under ``python -m torch.distributed.run``, and the kill-and-resume test
kills it; it does not depend on the command line, which has its own tests. It registers the toy
methods below, trains the inline JSON configuration and prints the summary as JSON from rank 0.
Tests that train in their own process load this file by its path and put the toy methods into
``METHODS`` with monkeypatch, so the registry of the test process stays as shipped.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from typing_extensions import override

from hmcam.training import (
    METHODS,
    Batch,
    MethodOutput,
    MethodSetup,
    StepContext,
    TrainConfig,
    TrainingMethod,
    train,
)
from hmcam.training.examples import ExampleState


class RunningGradient(TrainingMethod):
    """A toy method with per-example state: a running sum of each example's input gradient.

    It trains on ``clip(x + 0.05 tanh(r))`` and then sets ``r = 0.5 r + g``, where ``g`` is the
    gradient of that example's own loss at its input (the batch mean's gradient times the
    process's batch size, which is the same for one process or several). With several processes an
    example meets a different process every epoch, so the chains agree with one process's only if
    the trainer keeps the store identical everywhere.
    """

    name = "running-gradient"
    store: ExampleState

    @override
    def setup(self, setup: MethodSetup) -> None:
        self.store = setup.examples
        self.store.register("running", setup.input_shape)
        self.store.register("visits", (), dtype=torch.int64)

    @override
    def train_step(self, model: nn.Module, optimizer: Optimizer, batch: Batch, context: StepContext) -> None:
        device = batch.images.device
        running = self.store.read("running", batch.indices, device)
        inputs = (batch.images + 0.05 * torch.tanh(running)).clamp(0, 1).detach().requires_grad_()
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits, batch.labels)
        loss.backward()
        gradient = inputs.grad * batch.labels.numel()
        self.store.write("running", batch.indices, 0.5 * running + gradient)
        self.store.write("visits", batch.indices, self.store.read("visits", batch.indices) + 1)
        optimizer.step()
        context.record(MethodOutput(loss, logits, {}), batch.labels)
        context.add_passes(1)


TOY_METHODS: dict[str, type[TrainingMethod]] = {RunningGradient.name: RunningGradient}


def main(argv: list[str]) -> int:
    """Train the configuration ``argv[0]`` (inline JSON), resuming with ``--resume``; print the summary."""
    METHODS.update(TOY_METHODS)
    config = TrainConfig.from_dict(json.loads(argv[0]))
    summary = train(config, resume="--resume" in argv[1:])
    if os.environ.get("RANK", "0") == "0":
        json.dump(summary, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
