"""Exact resume of a real training process killed with SIGKILL in the middle of an epoch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from hmcam.core.storage import load_tensors
from hmcam.training import TrainConfig, train

# smallcnn has dropout and PGD-AT draws random starts, so the RNG streams must be restored too.
CONFIG = dict(
    dataset="fashion-mnist",
    model="smallcnn",
    method="pgd",
    method_kwargs={"eps": 0.1, "alpha": 0.05, "steps": 2},
    epochs=3,
    batch_size=64,
    lr=0.05,
    train_limit=512,
    test_limit=64,
    eval_subset=32,
    eval_steps=2,
    seed=3,
    deterministic=True,
)
STEPS_PER_EPOCH = 512 // 64
KILL_AT = re.compile(rf"epoch 2/3:.*?\|\s*([1-{STEPS_PER_EPOCH - 1}])/{STEPS_PER_EPOCH}")
TIMEOUT = 120


RUNNER = Path(__file__).with_name("run_training.py")


def _entry_point(out: Path, *extra: str, progress: bool) -> list[str]:
    config = dict(CONFIG, out=str(out), progress=progress)
    return [sys.executable, str(RUNNER), json.dumps(config), *extra]


def _kill_mid_epoch_two(out: Path) -> str:
    """Start training, SIGKILL it while the progress bar shows epoch 2 partly done; return its stderr."""
    process = subprocess.Popen(_entry_point(out, progress=True), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = bytearray()
    killed = threading.Event()

    def watch() -> None:
        while chunk := os.read(process.stderr.fileno(), 4096):
            seen.extend(chunk)
            if not killed.is_set() and KILL_AT.search(seen.decode(errors="replace")):
                process.send_signal(signal.SIGKILL)
                killed.set()

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=5)
    assert killed.is_set(), f"training ended before it could be killed:\n{seen.decode(errors='replace')[-2000:]}"
    assert process.returncode == -signal.SIGKILL
    return seen.decode(errors="replace")


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = train(TrainConfig(**CONFIG, out=str(tmp_path / "reference"), progress=False))

    out = tmp_path / "killed"
    _kill_mid_epoch_two(out)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    _, state = load_tensors(out / "state.safetensors")
    assert (state["epoch"], state["step"]) == (1, STEPS_PER_EPOCH)

    result = subprocess.run(
        _entry_point(out, "--resume", progress=False), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["resumed_from_epoch"] == 1 and summary["epochs"] == 3

    expected, _ = load_tensors(tmp_path / "reference" / "last.safetensors")
    found, _ = load_tensors(out / "last.safetensors")
    assert expected.keys() == found.keys()
    mismatched = [name for name in expected if not torch.equal(expected[name], found[name])]
    assert mismatched == []

    def untimed(text):
        return [{k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in text.splitlines()]

    assert untimed((out / "metrics.jsonl").read_text()) == untimed(
        Path(reference["files"]["metrics.jsonl"]).read_text()
    )
