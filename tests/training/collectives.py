"""Two-process checks of the collectives the trainer relies on, run by test_collectives.py under torchrun.

``python -m torch.distributed.run --nproc_per_node=2 collectives.py OUT`` runs every check on both
processes (gloo, CPU); a failed check raises, so the command fails; rank 0 writes ``OUT`` with a
summary when all pass. Checked: the per-example store's sync (uneven and empty writes, conflicts,
bool tensors), gathering bytes onto rank 0 only, :func:`any_process`, :func:`no_sync`, and batch
normalization converted by :func:`convert_batchnorm` against plain batch norm on the whole global
batch.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

from hmcam.core.distributed import (
    CrossProcessBatchNorm,
    all_gather_bytes,
    any_process,
    convert_batchnorm,
    gather_bytes,
    no_sync,
    setup_distributed,
    teardown_distributed,
    wrap_model,
)
from hmcam.training.examples import ExampleState


def check_example_state(context) -> None:
    store = ExampleState(10, context)
    store.register("x", (3,))
    store.register("flag", (), dtype=torch.bool, fill=False)
    rank = context.rank
    if rank == 0:
        store.write("x", torch.tensor([0, 1, 2]), torch.full((3, 3), 1.0))
    else:
        store.write("x", torch.tensor([5, 6]), torch.full((2, 3), 2.0))
        store.write("x", torch.tensor([2]), torch.full((1, 3), 3.0))  # conflicts with rank 0: rank 1 wins
        store.write("flag", torch.tensor([9]), torch.tensor([True]))
    # A write is visible to the writer at once, before the sync.
    assert store.read("x", torch.tensor([5 if rank else 0]))[0, 0].item() == (2.0 if rank else 1.0)
    store.sync()
    expected = torch.zeros(10, 3)
    expected[[0, 1]] = 1.0
    expected[[5, 6]] = 2.0
    expected[2] = 3.0
    assert torch.equal(store.tensor("x"), expected), store.tensor("x")
    assert store.tensor("flag").tolist() == [False] * 9 + [True]
    # Only rank 1 writes; then nobody does.
    if rank == 1:
        store.write("x", torch.tensor([7]), torch.full((1, 3), 4.0))
    store.sync()
    store.sync()
    assert store.tensor("x")[7].tolist() == [4.0, 4.0, 4.0]


def check_bytes(context) -> None:
    payload = b"rank one payload" if context.rank else b"r0"
    gathered = gather_bytes(payload, context)
    assert gathered == ([b"r0", b"rank one payload"] if context.rank == 0 else []), gathered
    assert all_gather_bytes(payload, context) == [b"r0", b"rank one payload"]
    assert any_process(context.rank == 1, context) is True
    assert any_process(False, context) is False


def check_no_sync(context) -> None:
    model = wrap_model(nn.Linear(3, 1, bias=False), context)
    x = torch.full((1, 3), float(context.rank + 1))
    with no_sync(model):
        model(x).sum().backward()
    assert torch.equal(model.module.weight.grad, x)  # this process's gradient alone
    model(x).sum().backward()
    # The synchronized pass averages what each process accumulated: (2 * 1 + 2 * 2) / 2.
    assert torch.equal(model.module.weight.grad, torch.full((1, 3), 3.0))


def _error(found: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest difference relative to the largest magnitude expected (at least 1)."""
    scale = max(1.0, expected.detach().double().abs().max().item())
    return (found.detach().double() - expected.detach().double()).abs().max().item() / scale


def check_batchnorm(context, momentum: float | None) -> float:
    torch.manual_seed(0)
    # Convolutions without bias, as before batch norm in the zoo: a bias there has a zero gradient
    # made only of rounding, which no relative measure can compare.
    reference = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4, momentum=momentum),
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, bias=False),
        nn.BatchNorm2d(2),
    )
    with torch.no_grad():
        for module in reference:
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    synced = nn.Sequential(*(m for m in _copy(reference)))
    synced = convert_batchnorm(synced, context)
    assert sum(isinstance(m, CrossProcessBatchNorm) for m in synced.modules()) == 2
    x = torch.randn(8, 3, 9, 9) * 2 + 1
    weights = torch.randn(8, 2, 5, 5)
    worst = 0.0
    for _ in range(2):  # two steps: running statistics accumulate
        whole = x.clone().requires_grad_()
        expected_output = reference(whole)
        (expected_output * weights).sum().backward()
        mine = x[context.rank :: 2].clone().requires_grad_()
        output = synced(mine)
        (output * weights[context.rank :: 2]).sum().backward()
        worst = max(worst, _error(output, expected_output[context.rank :: 2]))
        worst = max(worst, _error(mine.grad, whole.grad[context.rank :: 2]))
        x = x * 0.9 + 0.3
    for parameter, expected in zip(synced.parameters(), reference.parameters(), strict=True):
        total = parameter.grad.clone()
        dist.all_reduce(total)  # the processes' gradients add up to the whole batch's
        worst = max(worst, _error(total, expected.grad))
    reference_buffers = dict(reference.named_buffers())
    for name, buffer in synced.named_buffers():
        worst = max(worst, _error(buffer, reference_buffers[name]))
    synced.eval()
    reference.eval()
    worst = max(worst, _error(synced(x[context.rank :: 2]), reference(x)[context.rank :: 2]))
    # Rounding measured below 1e-6; one process's statistics instead of the global batch's are off
    # by 0.1 or more.
    assert worst < 1e-4, worst
    return worst


def _copy(module: nn.Sequential) -> nn.Sequential:
    clone = nn.Sequential(*(type(m)(*_arguments(m)) for m in module))
    clone.load_state_dict(module.state_dict())
    return clone


def _arguments(module: nn.Module) -> tuple:
    if isinstance(module, nn.Conv2d):
        return (module.in_channels, module.out_channels, module.kernel_size, 1, 0, 1, 1, False)
    if isinstance(module, nn.BatchNorm2d):
        return (module.num_features, module.eps, module.momentum)
    return ()


def main(out: str) -> int:
    """Run the checks; rank 0 writes a summary to ``out``."""
    context = setup_distributed("cpu")
    try:
        assert context.world_size == 2 and context.backend == "gloo"
        check_example_state(context)
        check_bytes(context)
        check_no_sync(context)
        worst = max(check_batchnorm(context, 0.1), check_batchnorm(context, None))
        if context.is_main:
            with open(out, "w") as handle:
                json.dump({"ok": True, "batchnorm_worst": worst}, handle)
    finally:
        teardown_distributed(context)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
