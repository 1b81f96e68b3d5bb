"""Process-group plumbing for multi-process training under ``torchrun``.

:func:`setup_distributed` reads torchrun's environment, picks the device and initializes the process
group (NCCL on CUDA, gloo on the CPU); with one process every collective here is the identity. The
gloo exchanges onto rank 0 and batch norm over the global batch (:func:`convert_batchnorm`) too:
docs/training.md, "Process groups and collectives".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed import ProcessGroup
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from typing_extensions import override

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """The place of this process in the run: rank, world size, local rank, device and backend.

    ``backend`` is None when training runs in a single process; ``owns_group`` is True when
    :func:`setup_distributed` created the process group and so must destroy it. ``cpu_group`` is a
    gloo group over the same processes for collectives on CPU tensors when the main backend is not
    gloo (None: the default group serves).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    owns_group: bool = False
    cpu_group: ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether several processes take part (collectives do something)."""
        return self.backend is not None


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be >= 0, got {value}")
    return value


def resolve_device(request: str, local_rank: int | None = None) -> torch.device:
    """The device for ``request`` ("auto", "cpu", "cuda" or "cuda:N"); under torchrun CUDA means ``cuda:LOCAL_RANK``."""
    if not isinstance(request, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {request!r}")
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(request)
    except RuntimeError as error:
        raise ValueError(f"unknown device {request!r}: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {request!r} was requested but CUDA is not available")
        # torch's stubs type device.index as int, but it is None for a bare "cuda".
        index: int | None = device.index
        if local_rank is not None:
            if index is not None:
                raise ValueError(
                    f"under torchrun each process uses cuda:LOCAL_RANK; ask for device 'cuda', not {request!r}"
                )
            return torch.device("cuda", local_rank)
        if index is None:
            return torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise ValueError(f"training runs on 'cpu' or 'cuda' devices, got {request!r}")
    return device


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Detect torchrun's environment, pick the device and initialize the process group if needed.

    A process group that the caller already initialized is used as it is (and left alone by
    :func:`teardown_distributed`).
    """
    present = [name for name in ENV_VARS if name in os.environ]
    if not present:
        return DistributedContext(0, 1, 0, resolve_device(device), None)
    missing = [name for name in ENV_VARS if name not in os.environ]
    if missing:
        raise ValueError(f"incomplete torchrun environment: {present} are set but {missing} are not")
    rank, world_size, local_rank = (_env_int(name) for name in ENV_VARS)
    if world_size == 1:
        return DistributedContext(0, 1, local_rank, resolve_device(device, local_rank), None)
    if rank >= world_size:
        raise ValueError(f"RANK={rank} must be smaller than WORLD_SIZE={world_size}")
    chosen = resolve_device(device, local_rank)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if owns:
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    elif dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError("the existing process group disagrees with RANK/WORLD_SIZE in the environment")
    used = dist.get_backend()
    # Every process creates the group in the same order here, as new_group requires.
    cpu_group = None if used == "gloo" else dist.new_group(backend="gloo")
    return DistributedContext(rank, world_size, local_rank, chosen, used, owns, cpu_group)


def teardown_distributed(context: DistributedContext) -> None:
    """Destroy the process group if :func:`setup_distributed` created it.

    Every process first waits for the others: a process that tore its group down while another was
    still in a collective made gloo abort the other ("terminate called without an active exception").
    """
    if context.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """``model`` itself, or a DistributedDataParallel wrapper of it when several processes train."""
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or ``model`` itself); attacks run on it."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def no_sync(model: nn.Module) -> Iterator[None]:
    """Accumulate gradients locally inside the block: DDP's ``no_sync`` for a wrapper, nothing otherwise.

    A method that adds up several backward passes before one optimizer step (YOPO) runs all but
    the last inside this block, so gradients are averaged across processes once.
    """
    if isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward pass sums the incoming gradients over processes as well."""

    @staticmethod
    @override
    def forward(ctx: Any, tensor: Tensor, group: ProcessGroup | None) -> Tensor:
        ctx.group = group
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    @override
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None]:
        total = grads[0].clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        return total, None


def _all_reduce_sum_with_grad(tensor: Tensor, group: ProcessGroup | None) -> Tensor:
    total: Tensor = _AllReduceSum.apply(tensor, group)  # type: ignore[no-untyped-call]  # torch leaves apply untyped
    return total


class CrossProcessBatchNorm(_BatchNorm):
    """Batch normalization whose training statistics cover the batches of every process (any device).

    In training mode with several processes, the per-channel mean and (biased) variance are those of
    the global batch, computed in two all-reduces (sums, then squared deviations from the global
    mean, so the variance does not suffer the cancellation of a sum-of-squares formula); the
    running averages are updated with the unbiased variance of the global batch; gradients flow
    through the all-reduces, so every process gets the gradient of the global batch's loss. In eval
    mode, or with a single process, it is plain batch normalization. It exists because torch's
    ``SyncBatchNorm`` runs only on GPUs; :func:`convert_batchnorm` uses torch's on CUDA.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: ProcessGroup | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    @override
    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    @override
    def forward(self, input: Tensor) -> Tensor:
        """``input`` ``[B, C, ...]`` normalized with the global batch's statistics (training) or the running ones."""
        self._check_input_dim(input)
        synced = self.training and dist.is_available() and dist.is_initialized()
        if not synced or dist.get_world_size(self.process_group) == 1:
            output: Tensor = super().forward(input)
            return output
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative moving average, as in torch's batch norm
                factor = 1.0 / float(self.num_batches_tracked.item())
        dims = [0, *range(2, input.dim())]
        shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
        count = input.new_tensor([input.numel() // input.shape[1]])
        sums = _all_reduce_sum_with_grad(torch.cat([input.sum(dims), count]), self.process_group)
        total = sums[-1].detach()
        mean = sums[:-1] / total
        centered = input - mean.view(shape)
        variance = _all_reduce_sum_with_grad(centered.square().sum(dims), self.process_group) / total
        output = centered * torch.rsqrt(variance + self.eps).view(shape)
        if self.weight is not None and self.bias is not None:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                unbiased = variance * total / (total - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return output


def convert_batchnorm(module: nn.Module, context: DistributedContext) -> nn.Module:
    """``module`` with every batch-norm layer synchronized across the processes of ``context``.

    On CUDA the layers become torch's ``SyncBatchNorm``; on other devices
    :class:`CrossProcessBatchNorm`. Parameters are shared with the original layers and buffers
    copied, so the state dict keys and values are unchanged. With a single process ``module`` is
    returned as it is.
    """
    if not context.enabled:
        return module
    if context.device.type == "cuda":
        converted: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(module)  # type: ignore[no-untyped-call]
        return converted
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    result = module
    if isinstance(module, _BatchNorm) and not isinstance(module, (CrossProcessBatchNorm, nn.SyncBatchNorm)):
        result = CrossProcessBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            result.weight = module.weight
            result.bias = module.bias
        result.running_mean = module.running_mean
        result.running_var = module.running_var
        result.num_batches_tracked = module.num_batches_tracked
        result.train(module.training)
    for name, child in module.named_children():
        result.add_module(name, _convert(child))
    return result


def all_reduce_sum(values: Tensor, context: DistributedContext) -> Tensor:
    """``values`` summed over all processes (in place on a copy); the identity for one process."""
    values = values.detach().clone()
    if context.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _padded_bytes(payload: bytes, context: DistributedContext) -> tuple[Tensor, list[int]]:
    """``payload`` as a uint8 CPU tensor padded to the longest payload of all processes, and every length."""
    data = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else torch.zeros(0, dtype=torch.uint8)
    size = torch.tensor([data.numel()], dtype=torch.int64)
    sizes = [torch.zeros_like(size) for _ in range(context.world_size)]
    dist.all_gather(sizes, size, group=context.cpu_group)
    lengths = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8)
    padded[: data.numel()] = data
    return padded, lengths


def all_gather_bytes(payload: bytes, context: DistributedContext) -> list[bytes]:
    """Every process's ``payload``, in rank order, on every process (uint8 CPU tensors over gloo, no pickling)."""
    if not context.enabled:
        return [payload]
    padded, lengths = _padded_bytes(payload, context)
    chunks = [torch.zeros_like(padded) for _ in range(context.world_size)]
    dist.all_gather(chunks, padded, group=context.cpu_group)
    return [chunk[:length].numpy().tobytes() for chunk, length in zip(chunks, lengths, strict=True)]


def gather_bytes(payload: bytes, context: DistributedContext) -> list[bytes]:
    """Every process's ``payload`` in rank order on rank 0, which writes files; ``[]`` on the others.

    The bytes travel as uint8 CPU tensors over gloo, so no process holds another's state in GPU
    memory, and only rank 0 holds them at all.
    """
    if not context.enabled:
        return [payload]
    padded, lengths = _padded_bytes(payload, context)
    group = context.cpu_group
    # gather() takes the destination's rank in the default group, which is also its rank here.
    chunks = [torch.zeros_like(padded) for _ in range(context.world_size)] if context.is_main else None
    dist.gather(padded, chunks, dst=0, group=group)
    if chunks is None:
        return []
    return [chunk[:length].numpy().tobytes() for chunk, length in zip(chunks, lengths, strict=True)]


def barrier(context: DistributedContext) -> None:
    """Wait for every process; the identity for one process."""
    if context.enabled:
        dist.barrier(group=context.cpu_group)


def any_process(flag: bool, context: DistributedContext) -> bool:
    """Whether ``flag`` is true on any process (an all-reduce over the CPU group); ``flag`` for one process."""
    if not context.enabled:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int64)
    dist.all_reduce(value, op=dist.ReduceOp.SUM, group=context.cpu_group)
    return bool(value.item())
