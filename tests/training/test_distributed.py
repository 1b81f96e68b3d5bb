"""Multi-process training: environment detection, and 2 gloo processes under torchrun matching one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hmcam.core.distributed import (
    all_gather_bytes,
    all_reduce_sum,
    resolve_device,
    setup_distributed,
    unwrap_model,
)
from hmcam.core.storage import load_tensors
from hmcam.training import METHODS, TrainConfig, train

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


RUNNER = Path(__file__).with_name("run_training.py")


def _torchrun(config: dict, processes: int = 2) -> dict:
    """Train ``config`` in ``processes`` gloo processes under torchrun; the summary rank 0 printed."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(RUNNER),
        json.dumps(config),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)  # printed by rank 0 only


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
    summary = _torchrun(dict(CONFIG, out=str(out)))
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


# ResNet-32 has 31 batch-norm layers. Contiguous layout and a small rate keep the rounding
# differences between one and two processes from being amplified: measured after 4 steps, 1.6e-4 in
# weights and 2.1e-3 in running_var with synchronized batch norm, 0.014 and 0.24 without (at the
# default channels-last layout and rate 0.05, training turns rounding into 0.01 either way).
BN_CONFIG = dict(CONFIG, model="resnet32", model_options={}, epochs=1, lr=0.01, train_limit=128, channels_last=False)


@pytest.mark.slow
def test_a_batch_norm_network_trains_as_in_one_process(tmp_path: Path) -> None:
    single = train(TrainConfig(**BN_CONFIG, out=str(tmp_path / "single")))
    summary = _torchrun(dict(BN_CONFIG, out=str(tmp_path / "ddp")))
    assert summary["steps"] == single["steps"] == 4
    expected, _ = load_tensors(tmp_path / "single" / "last.safetensors")
    found, _ = load_tensors(tmp_path / "ddp" / "last.safetensors")
    assert expected.keys() == found.keys()

    def worst(kind: str) -> float:
        names = [n for n in expected if kind in n] if kind else [n for n in expected if "running" not in n]
        assert names
        return max((expected[n].double() - found[n].double()).abs().max().item() for n in names)

    assert worst("") <= 2e-3  # weights, biases and the normalization constants
    assert worst("running_var") <= 0.03
    assert worst("running_mean") <= 5e-3
    assert summary["final"]["train_loss"] == pytest.approx(single["final"]["train_loss"], abs=1e-3)


# An MLP computes each example's input gradient identically in one process or two, so the chains of
# the toy method (tests/training/run_training.py) agree to rounding.
STORE_CONFIG = dict(CONFIG, method="running-gradient", train_limit=256)


@pytest.mark.slow
def test_per_example_state_follows_its_examples_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "running-gradient", _load_runner().RunningGradient)
    single = train(TrainConfig(**STORE_CONFIG, out=str(tmp_path / "single")))
    summary = _torchrun(dict(STORE_CONFIG, out=str(tmp_path / "ddp")))
    # 256 examples: 8 global batches of 32 an epoch, one pass each.
    assert summary["steps"] == single["steps"] == 16
    assert summary["final"]["passes"] == single["final"]["passes"] == 8
    assert summary["final"]["passes_total"] == 16

    # The store is saved once, not per process, and it is the single process's: each example was
    # updated by whichever process held it that epoch, and read the next epoch by the other one.
    reference, _ = load_tensors(tmp_path / "single" / "state.safetensors")
    state, meta = load_tensors(tmp_path / "ddp" / "state.safetensors")
    assert sorted(name for name in state if "examples" in name) == ["examples.running", "examples.visits"]
    assert set(state["examples.visits"].tolist()) == {2}
    running = state["examples.running"]
    assert running.abs().max() > 0.01
    assert (running - reference["examples.running"]).abs().max().item() <= 1e-5
    expected, _ = load_tensors(tmp_path / "single" / "last.safetensors")
    found, _ = load_tensors(tmp_path / "ddp" / "last.safetensors")
    assert max((expected[name] - found[name]).abs().max().item() for name in expected) <= 1e-5
    assert meta["world_size"] == 2 and {"rank0.rng.torch", "rank1.rng.torch"} <= set(state)


def _load_runner():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hmcam_tests_run_training", RUNNER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
