"""Per-example state that a training method carries across epochs, owned by the trainer.

Some methods keep a tensor per training example: CAT's chains and momenta, a warm-started
perturbation. Such state must be indexed by the example's position in the dataset, not by its place
in a minibatch, and under ``torchrun`` it cannot live on one process: the DistributedSampler deals
every example to a different process each epoch, so a process that kept only the rows it had
touched would read stale rows the next time it met an example another process had updated.

:class:`ExampleState` keeps each registered tensor whole (``[N, ...]``, on the CPU) on every
process. A method reads the rows of its minibatch (moved to its device) and writes updated rows
back; after every minibatch the trainer calls :meth:`ExampleState.sync`, which all-gathers the rows
each process wrote (on the GPU under NCCL, on the CPU under gloo) and applies them in rank order, so
every process holds the same tensors again. Being identical everywhere, the store is saved once, by
rank 0, in the trainer state: nothing is ever gathered whole. On CIFAR-10 a chain of every
example is ``50000 x 3 x 32 x 32`` floats, 614 MB of host memory per tensor and process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from hmcam.core.distributed import DistributedContext


class ExampleState:
    """Named per-example tensors ``[size, *shape]`` on the CPU, identical on every process after :meth:`sync`.

    ``size`` is the number of examples of the training set (rows are dataset positions, the
    indices a method finds in its minibatch). Register tensors in the method's ``setup`` hook,
    before the trainer loads a saved state into them.
    """

    def __init__(self, size: int, context: DistributedContext) -> None:
        if size < 1:
            raise ValueError(f"an example store needs at least one example, got {size}")
        self.size = size
        self.context = context
        self._tensors: dict[str, Tensor] = {}
        self._written: dict[str, list[Tensor]] = {}

    @property
    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def register(
        self, name: str, shape: Sequence[int], dtype: torch.dtype = torch.float32, fill: float | bool = 0
    ) -> Tensor:
        """Create tensor ``name`` of shape ``[size, *shape]`` filled with ``fill``; returns it (on the CPU).

        Registering a name twice is an error, as is a name with a dot (names become keys of the
        state file).
        """
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"per-example state names must be non-empty strings without dots, got {name!r}")
        if name in self._tensors:
            raise ValueError(f"per-example state {name!r} is already registered")
        shape = tuple(int(n) for n in shape)
        if any(n < 1 for n in shape):
            raise ValueError(f"per-example state {name!r} needs positive sizes, got {shape}")
        tensor = torch.full((self.size, *shape), fill, dtype=dtype)
        self._tensors[name] = tensor
        self._written[name] = []
        return tensor

    def tensor(self, name: str) -> Tensor:
        """The whole tensor ``name`` (on the CPU); treat it as read-only and change it through :meth:`write`."""
        self._check(name)
        return self._tensors[name]

    def read(self, name: str, indices: Tensor, device: torch.device | str | None = None) -> Tensor:
        """Rows ``indices`` (dataset positions) of ``name``, copied to ``device`` (default: the CPU)."""
        self._check(name)
        rows = self._tensors[name][self._index(indices)]
        return rows if device is None else rows.to(device, non_blocking=True)

    def write(self, name: str, indices: Tensor, rows: Tensor) -> None:
        """Set rows ``indices`` of ``name`` to ``rows`` here at once, and on every process at the next :meth:`sync`."""
        self._check(name)
        index = self._index(indices)
        target = self._tensors[name]
        if tuple(rows.shape) != (index.numel(), *target.shape[1:]):
            raise ValueError(
                f"per-example state {name!r}: {index.numel()} indices need rows of shape "
                f"{(index.numel(), *target.shape[1:])}, got {tuple(rows.shape)}"
            )
        target[index] = rows.detach().to(device="cpu", dtype=target.dtype)
        self._written[name].append(index)

    def sync(self) -> None:
        """Copy the rows every process wrote since the last call to every process (a collective: all call it).

        Where two processes wrote the same row, the higher rank's value wins on every process.
        """
        written = {name: torch.unique(torch.cat(parts)) if parts else None for name, parts in self._written.items()}
        for parts in self._written.values():
            parts.clear()
        if not self.context.enabled:
            return
        counts = torch.tensor([0 if index is None else index.numel() for index in written.values()], dtype=torch.int64)
        gathered = [torch.zeros_like(counts) for _ in range(self.context.world_size)]
        dist.all_gather(gathered, counts, group=self.context.cpu_group)
        # Rows go through the main backend: on NCCL they travel between GPUs, which is what NCCL is for.
        device = self.context.device if self.context.backend == "nccl" else torch.device("cpu")
        for slot, (name, index) in enumerate(written.items()):
            sizes = [int(count[slot].item()) for count in gathered]
            longest = max(sizes)
            if longest == 0:
                continue
            store = self._tensors[name]
            mine = torch.zeros(longest, dtype=torch.int64)
            if index is not None:
                mine[: index.numel()] = index
            rows = torch.zeros((longest, *store.shape[1:]), dtype=store.dtype)
            if index is not None:
                rows[: index.numel()] = store[index]
            indices = self._all_gather(mine.to(device))
            values = self._all_gather(self._wire(rows).to(device))
            for size, received_index, received in zip(sizes, indices, values, strict=True):
                if size:
                    store[received_index[:size].cpu()] = self._unwire(received[:size].cpu(), store.dtype)

    def _all_gather(self, tensor: Tensor) -> list[Tensor]:
        chunks = [torch.empty_like(tensor) for _ in range(self.context.world_size)]
        dist.all_gather(chunks, tensor)
        return chunks

    @staticmethod
    def _wire(rows: Tensor) -> Tensor:
        # gloo has no bool collectives; bytes carry the same values.
        return rows.to(torch.uint8) if rows.dtype == torch.bool else rows

    @staticmethod
    def _unwire(rows: Tensor, dtype: torch.dtype) -> Tensor:
        return rows.to(dtype)

    def state_dict(self) -> dict[str, Tensor]:
        """The registered tensors by name (the live CPU tensors; the trainer saves them once, from rank 0)."""
        return dict(self._tensors)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the tensors of :meth:`state_dict`: the same names, shapes and dtypes as registered."""
        missing = sorted(set(self._tensors) - set(state))
        unknown = sorted(set(state) - set(self._tensors))
        if missing or unknown:
            raise ValueError(
                f"the saved per-example state holds {sorted(state)}, but the method registered {self.names}"
            )
        for name, value in state.items():
            target = self._tensors[name]
            if value.shape != target.shape or value.dtype != target.dtype:
                raise ValueError(
                    f"saved per-example state {name!r} is {value.dtype} {tuple(value.shape)}, "
                    f"expected {target.dtype} {tuple(target.shape)}"
                )
            target.copy_(value)

    def _check(self, name: str) -> None:
        if name not in self._tensors:
            raise KeyError(f"no per-example state named {name!r}; registered: {self.names}")

    def _index(self, indices: Tensor) -> Tensor:
        index = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.size):
            raise IndexError(f"example indices must lie in [0, {self.size}), got {index.min()}..{index.max()}")
        return index
