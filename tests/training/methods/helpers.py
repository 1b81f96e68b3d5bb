"""Shared checks of the adversarial training methods, and their process entry point.

Tests get this module from the ``helpers`` fixture (``conftest.py``), which loads it once by its
path, so that the natural baseline it caches is trained once per session. Run as a script,
``python helpers.py CONFIG_JSON [--resume]`` trains the inline JSON configuration and prints the
summary from rank 0, as ``tests/training/run_training.py`` does; with
``HMCAM_TEST_KILL_AT=EPOCH:BATCH`` in the environment the process sends itself SIGKILL right after
that minibatch (0-based) has been trained, a kill in the middle of an epoch at a known point rather
than one timed by a progress bar.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hmcam.core.storage import load_tensors
from hmcam.training import METHODS, TrainConfig, train

KILL_VARIABLE = "HMCAM_TEST_KILL_AT"
TIMEOUT = 240

#: A tiny run for the resume and torchrun checks: an MLP has no dropout or batch norm, so one process
#: and two compute the same averaged gradients, and every random draw of the methods is a function
#: of (seed, epoch, minibatch).
TINY = dict(
    dataset="fashion-mnist",
    model="mlp",
    model_options={"hidden": [32]},
    epochs=2,
    batch_size=32,
    lr=0.05,
    train_limit=192,
    test_limit=32,
    eval_subset=16,
    eval_steps=2,
    seed=5,
    deterministic=True,
    progress=False,
    device="cpu",
)

#: The robustness check: LeNet on 2048 Fashion-MNIST images, robust accuracy under PGD-10 at eps 0.1
#: on 300 test images, natural training given at least the budget of every method (12 epochs).
ROBUST = dict(
    dataset="fashion-mnist",
    model="lenet",
    batch_size=64,
    lr=0.05,
    train_limit=2048,
    test_limit=300,
    eval_subset=300,
    eval_steps=10,
    eval_eps=0.1,
    progress=False,
    device="cpu",
)
NATURAL_EPOCHS = 12


def _command(config: dict[str, Any], *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__)), json.dumps(config), *extra]


def weights(run: Path) -> dict[str, torch.Tensor]:
    """The final weights of the run folder ``run``."""
    tensors, _ = load_tensors(run / "last.safetensors")
    return tensors


def assert_resumes_exactly(tmp_path: Path, config: dict[str, Any], kill_at: tuple[int, int] = (1, 2)) -> None:
    """A run SIGKILLed after minibatch ``kill_at`` (epoch, batch) and resumed ends as an uninterrupted one."""
    reference = train(TrainConfig(**config, out=str(tmp_path / "reference")))
    out = tmp_path / "killed"
    environment = {**os.environ, KILL_VARIABLE: f"{kill_at[0]}:{kill_at[1]}"}
    killed = subprocess.run(
        _command(dict(config, out=str(out))), env=environment, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    _, state = load_tensors(out / "state.safetensors")
    assert state["epoch"] == kill_at[0]

    resumed = subprocess.run(
        _command(dict(config, out=str(out)), "--resume"), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from_epoch"] == kill_at[0] and summary["epochs"] == config["epochs"]
    expected, found = weights(tmp_path / "reference"), weights(out)
    assert expected.keys() == found.keys()
    assert [name for name in expected if not torch.equal(expected[name], found[name])] == []
    # The trainer state too, method state included (RNG states differ: the killed run reseeded nothing, but
    # its streams were restored, not continued, in a new process).
    expected, _ = load_tensors(tmp_path / "reference" / "state.safetensors")
    found, _ = load_tensors(out / "state.safetensors")
    assert expected.keys() == found.keys()
    compared = [name for name in expected if not name.startswith("rank0.rng")]
    assert [name for name in compared if not torch.equal(expected[name], found[name])] == []

    def untimed(path: Path) -> list[dict[str, Any]]:
        lines = path.read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in lines]

    assert untimed(out / "metrics.jsonl") == untimed(Path(reference["files"]["metrics.jsonl"]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def two_process_runs(tmp_path: Path, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``config`` in one process (``tmp_path/single``) and in two gloo processes under torchrun (``/ddp``).

    Returns both summaries, after checking that both runs took the same steps and counted the same passes.
    """
    single = train(TrainConfig(**config, out=str(tmp_path / "single")))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *_command(dict(config, out=str(tmp_path / "ddp")))[1:],
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-12000:]
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["world_size"] == 2 and summary["steps"] == single["steps"]
    assert summary["final"]["passes"] == pytest.approx(single["final"]["passes"], rel=1e-9)
    return single, summary


def max_weight_difference_of_two_processes(tmp_path: Path, config: dict[str, Any]) -> float:
    """The largest weight difference between ``config`` trained in one process and in two (:func:`two_process_runs`)."""
    two_process_runs(tmp_path, config)
    expected, found = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    return max((expected[name] - found[name]).abs().max().item() for name in expected)


@functools.cache
def natural_robust_accuracy(seed: int) -> float:
    """Robust accuracy of natural training on the robustness check's data, trained for :data:`NATURAL_EPOCHS`."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        summary = train(TrainConfig(**ROBUST, method="natural", epochs=NATURAL_EPOCHS, seed=seed, out=folder))
    accuracy: float = summary["final"]["robust_accuracy"]
    return accuracy


def robust_run(tmp_path: Path, method: str, method_kwargs: dict[str, Any], epochs: int, seed: int) -> dict[str, Any]:
    """The final metrics of ``method`` trained on the robustness check's data; its budget must not exceed natural's."""
    summary = train(
        TrainConfig(**ROBUST, method=method, method_kwargs=method_kwargs, epochs=epochs, seed=seed, out=str(tmp_path))
    )
    final: dict[str, Any] = summary["final"]
    batches = ROBUST["train_limit"] // ROBUST["batch_size"]
    assert final["passes_total"] / batches <= NATURAL_EPOCHS + 1
    return final


def _kill_after(method: str, point: tuple[int, int]) -> None:
    """Make training ``method`` SIGKILL this process right after it has trained minibatch ``point``."""
    cls = METHODS[method]
    original = cls.train_step

    def step(self: Any, model: Any, optimizer: Any, batch: Any, context: Any) -> None:
        original(self, model, optimizer, batch, context)
        if (context.epoch, context.batch) == point:
            os.kill(os.getpid(), signal.SIGKILL)

    cls.train_step = step


def main(argv: list[str]) -> int:
    """Train the configuration ``argv[0]`` (inline JSON), resuming with ``--resume``; print the summary."""
    config = TrainConfig.from_dict(json.loads(argv[0]))
    if KILL_VARIABLE in os.environ:
        epoch, batch = os.environ[KILL_VARIABLE].split(":")
        _kill_after(config.method, (int(epoch), int(batch)))
    summary = train(config, resume="--resume" in argv[1:])
    if os.environ.get("RANK", "0") == "0":
        json.dump(summary, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
