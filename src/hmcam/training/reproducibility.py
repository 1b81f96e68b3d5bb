"""What makes a training run reproducible: its seeds and, on request, deterministic kernels.

The model is initialized from ``seed`` on every process (:func:`seed_everything`); then each process
reseeds its random streams from ``(seed, rank)`` (:func:`process_seed`), so processes draw different
random starts. :func:`deterministic_algorithms` asks torch for deterministic kernels while a run
trains (``TrainConfig.deterministic``).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), NumPy and Python ``random`` with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def process_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s random streams during training, derived from (seed, rank).

    Processes draw different random starts; the model is initialized from ``seed`` itself before
    this, identically on every process.
    """
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Ask torch for deterministic kernels while training (when ``enabled``), then restore the flags."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    if enabled:
        # cuBLAS needs a fixed workspace for reproducible results; it must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[1], previous[2]
