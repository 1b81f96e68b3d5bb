"""Two gloo processes: the per-example store's sync, gathering onto rank 0, and synchronized batch norm.

The checks themselves are in ``collectives.py`` beside this file, which torchrun starts twice.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("collectives.py")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_collectives_under_two_gloo_processes(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(SCRIPT),
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(out.read_text())
    assert summary["ok"] is True
    assert summary["batchnorm_worst"] < 1e-4
