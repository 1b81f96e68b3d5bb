"""Process-group plumbing for multi-process training under ``torchrun``.

``torchrun --nproc_per_node=K`` starts K copies of the entry point with RANK, WORLD_SIZE and
LOCAL_RANK (and the rendezvous address) in the environment. :func:`setup_distributed` reads them,
picks the device (``cuda:LOCAL_RANK`` on GPUs, else the CPU) and initializes the process group
(NCCL on CUDA, gloo on the CPU). Without those variables, or with one process, training runs in the
current process and every collective below is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """The place of this process in the run: rank, world size, local rank, device and backend.

    ``backend`` is None when training runs in a single process; ``owns_group`` is True when
    :func:`setup_distributed` created the process group and so must destroy it.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    owns_group: bool = False

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
    return DistributedContext(rank, world_size, local_rank, chosen, dist.get_backend(), owns)


def teardown_distributed(context: DistributedContext) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if context.owns_group and dist.is_initialized():
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


def all_reduce_sum(values: Tensor, context: DistributedContext) -> Tensor:
    """``values`` summed over all processes (in place on a copy); the identity for one process."""
    values = values.detach().clone()
    if context.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_bytes(payload: bytes, context: DistributedContext) -> list[bytes]:
    """Every process's ``payload``, in rank order, on every process (uint8 tensors, no pickling)."""
    if not context.enabled:
        return [payload]
    data = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(context.device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=context.device)
    sizes = [torch.zeros_like(size) for _ in range(context.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=context.device)
    padded[: data.numel()] = data
    chunks = [torch.zeros_like(padded) for _ in range(context.world_size)]
    dist.all_gather(chunks, padded)
    return [chunk[: int(s.item())].cpu().numpy().tobytes() for chunk, s in zip(chunks, sizes, strict=True)]


def barrier(context: DistributedContext) -> None:
    """Wait for every process; the identity for one process."""
    if context.enabled:
        dist.barrier()
