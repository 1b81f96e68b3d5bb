"""Where and how a run was made: package versions, the machine, the command line and the wall time.

Every run folder's ``results.json`` carries a ``run`` record (:func:`run_record`) so that a number
in a report can always be traced to the code, the machine and the time that produced it; the HTML
report (:mod:`hmcam.reporting.page`) prints it beside the results.
"""

from __future__ import annotations

import os
import platform
import shlex
import time
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import torch

#: The packages whose versions decide the numbers a run produces.
PACKAGES = ("hmcam", "torch", "numpy", "scikit-learn", "matplotlib", "safetensors")

# The command line of this process, set by the CLI; None when hmcam is used as a library.
_command: str | None = None


def record_command(arguments: list[str]) -> None:
    """Remember this process's ``hmcam`` command line, so that run records say how to re-run them."""
    global _command
    _command = shlex.join(["hmcam", *arguments])


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def processor_name() -> str:
    """The CPU model as the operating system names it (``/proc/cpuinfo`` on Linux), else the platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str | None = None) -> dict[str, Any]:
    """Python, package versions and the machine: CPU model and cores, torch threads, the GPU if one is used."""
    accelerator = None
    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        accelerator = torch.cuda.get_device_name()
    return {
        "python": platform.python_version(),
        "packages": {package: _version(package) for package in PACKAGES},
        "platform": platform.platform(),
        "processor": processor_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": accelerator,
    }


def timestamp(seconds: float) -> str:
    """``seconds`` since the epoch as an ISO 8601 UTC time, to the second."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")


def run_record(kind: str, started: float, device: str | None = None) -> dict[str, Any]:
    """The ``run`` record of ``results.json``: kind, command line, start, end and wall time, environment.

    ``started`` is the ``time.time()`` at which this invocation began; a resumed run records the
    invocation that finished it, so its wall time excludes work done by earlier, killed invocations.
    """
    finished = time.time()
    return {
        "kind": kind,
        "command": _command,
        "started": timestamp(started),
        "finished": timestamp(finished),
        "wall_seconds": round(finished - started, 1),
        "environment": environment(device),
    }
