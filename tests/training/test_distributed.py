"""Multi-process training: environment detection, and 2 gloo processes under torchrun matching one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hmcam.storage import load_tensors
from hmcam.training import TrainConfig, train
from hmcam.training.distributed import (
    all_gather_bytes,
    all_reduce_sum,
    resolve_device,
    setup_distributed,
    unwrap_model,
)

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_torchrun_training_is_single_process(clean_env) -> None:
    context = setup_distributed("cpu")
    assert (context.rank, context.world_size, context.enabled, context.is_main) == (0, 1, False, True)
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_sum(values, context), values)
    assert all_gather_bytes(b"abc", context) == [b"abc"]
    model = torch.nn.Linear(2, 2)
    assert unwrap_model(model) is model


def test_torchrun_environment_is_checked(clean_env) -> None:
    clean_env.setenv("RANK", "0")
    with pytest.raises(
        ValueError, match=r"incomplete torchrun environment: \['RANK'\] are set but \['WORLD_SIZE', 'LOCAL_RANK'\]"
    ):
        setup_distributed("cpu")
    clean_env.setenv("WORLD_SIZE", "two")
    clean_env.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        setup_distributed("cpu")
    clean_env.setenv("WORLD_SIZE", "1")
    context = setup_distributed("cpu")
    assert (context.world_size, context.enabled) == (1, False)
    clean_env.setenv("RANK", "2")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK=2 must be smaller than WORLD_SIZE=2"):
        setup_distributed("cpu")


def test_device_requests() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        resolve_device("meta")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# An MLP has no batch norm or dropout, so two processes on halves of each global batch compute the
# same averaged gradient as one process on the whole batch.
CONFIG = dict(
    dataset="fashion-mnist",
    model="mlp",
    model_options={"hidden": [64]},
    method="natural",
    epochs=2,
    batch_size=32,
    lr=0.05,
    train_limit=300,
    test_limit=50,
    eval_subset=0,
    seed=4,
    deterministic=True,
    progress=False,
    device="cpu",
)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_same_global_batches(tmp_path: Path) -> None:
    single = train(TrainConfig(**CONFIG, out=str(tmp_path / "single")))
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "hmcam.training",
        "--config",
        json.dumps(dict(CONFIG, out=str(out))),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # printed by rank 0 only
    assert summary["world_size"] == 2
    # 300 examples: 9 global batches of 32 (the incomplete tenth is dropped) in both runs.
    assert summary["steps"] == single["steps"] == 18

    expected, _ = load_tensors(tmp_path / "single" / "last.safetensors")
    found, _ = load_tensors(out / "last.safetensors")
    assert max((expected[name] - found[name]).abs().max().item() for name in expected) <= 1e-5
    assert summary["final"]["train_loss"] == pytest.approx(single["final"]["train_loss"], abs=1e-5)
    assert summary["final"]["clean_accuracy"] == single["final"]["clean_accuracy"]

    # Each process's RNG state is gathered into the one state file that rank 0 writes.
    tensors, state = load_tensors(out / "state.safetensors")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(tensors["rank0.rng.torch"], tensors["rank1.rng.torch"])
    config = json.loads((out / "config.json").read_text())
    assert (config["world_size"], config["process_batch"]) == (2, 16)
