"""The run folder: the one format every kind of run writes, and the one place that writes it.

A run folder holds ``config.json`` (what was asked, with the run's ``kind``), ``results.json`` (what
came out, with the ``run`` record of :mod:`hmcam.reporting.provenance`), ``results.csv`` (the main
table), further tables and figures, ``report.md`` and ``report.html`` (:mod:`hmcam.reporting.page`).
Every file is written atomically with the umask's mode (:func:`hmcam.core.storage.atomic_write`),
and the reports come last, so their presence marks a finished run. ``docs/outputs.md`` lists the
files of each kind of run.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from hmcam.core.storage import atomic_write, atomic_write_json, load_tensors, save_tensors
from hmcam.reporting.page import write_report
from hmcam.reporting.provenance import run_record
from hmcam.reporting.tables import write_csv

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.csv"
REPORT_FILE = "report.md"
PAGE_FILE = "report.html"


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON: non-finite floats become None, tuples lists, keys and paths strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"a run folder stores JSON values, not {type(value).__name__} ({value!r:.60})")


class RunFolder:
    """One run's folder ``out`` of the given ``kind`` (``"training"``, ``"evaluation"``, ``"attack"``, ...).

    ``started`` is the ``time.time()`` at which this invocation began (default: now) and ``device``
    where it ran; both go into the ``run`` record of ``results.json``. Nothing is written until a
    method is called.
    """

    def __init__(
        self, out: str | os.PathLike[str], kind: str, *, started: float | None = None, device: str | None = None
    ) -> None:
        self.path = Path(out)
        self.kind = kind
        self.started = time.time() if started is None else started
        self.device = device

    def file(self, name: str) -> Path:
        """The path of the file ``name`` in the folder (for writers of their own, such as figures)."""
        return self.path / name

    def saved_config(self) -> dict[str, Any] | None:
        """The ``config.json`` the folder holds, None if it has none; a ValueError names a damaged one."""
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"--out {self.path} is a file, not a folder")
        saved_file = self.file(CONFIG_FILE)
        if not saved_file.exists():
            return None
        try:
            saved = json.loads(saved_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{saved_file} is not valid JSON ({error}); remove it or choose another --out") from None
        if not isinstance(saved, dict):
            raise ValueError(f"{saved_file} is not a JSON object; remove it or choose another --out")
        return saved

    def start(self, config: dict[str, Any], mismatch: str = "a run of another configuration") -> None:
        """Make the folder this run's: refuse a file, or a ``config.json`` of another kind or configuration.

        A rerun with the same configuration finds its own ``config.json`` and continues (resume);
        ``mismatch`` says in the error what another one holds (``"a run of another plan"``), so the
        results of two configurations are never mixed. ``config.json`` records ``kind`` beside ``config``.
        """
        expected = json_ready({"kind": self.kind, **config})
        saved = self.saved_config()
        if saved is not None:
            if saved.get("kind", self.kind) != self.kind:
                raise ValueError(
                    f"{self.path} holds a run of kind {saved.get('kind')!r}, not {self.kind!r}; choose another --out"
                )
            if saved != expected:
                raise ValueError(f"{self.path} holds {mismatch} ({self.file(CONFIG_FILE)}); choose another --out")
        self.write_config(config)

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.json`` (``kind`` and ``config``) without comparing it with a saved one."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.file(CONFIG_FILE), json_ready({"kind": self.kind, **config}))

    def write_results(self, results: dict[str, Any]) -> None:
        """Write ``results.json``: ``results`` with this invocation's ``run`` record (versions, machine, times)."""
        run = run_record(self.kind, self.started, self.device)
        self.write_json(RESULTS_FILE, {**results, "run": run})

    def write_json(self, name: str, payload: Any) -> None:
        """Write ``payload`` as strict, indented JSON to the file ``name``."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.file(name), json_ready(payload))

    def write_table(
        self,
        rows: Sequence[dict[str, Any]],
        columns: Sequence[str],
        name: str = TABLE_FILE,
        *,
        lineterminator: str = "\r\n",
    ) -> None:
        """Write ``rows`` as CSV with ``columns`` (the main table is ``results.csv``; evaluations end lines in LF)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_csv(self.file(name), rows, columns, lineterminator)

    def write_text(self, name: str, text: str) -> None:
        """Write ``text`` (UTF-8) to the file ``name``."""
        atomic_write(self.file(name), text.encode())

    def write_report(self, markdown: str) -> Path:
        """Write ``report.md`` and, from the folder's files, ``report.html``; returns the page's path.

        Call it last: the page embeds the figures and reads ``results.json``.
        """
        self.write_text(REPORT_FILE, markdown)
        return self.write_page()

    def write_page(self) -> Path:
        """Write ``report.html`` from the folder's own files (``report.md``, ``results.json``, figures)."""
        page = self.file(PAGE_FILE)
        write_report([self.path], page)
        return page

    def write_overview(
        self, runs: Sequence[str | os.PathLike[str]], title: str, claims: Sequence[dict[str, Any]] | None = None
    ) -> Path:
        """Write ``report.html`` and ``report.md`` of this folder as one page over the run folders ``runs``.

        ``claims``, when given, are the page's claims table (judged across all the runs).
        """
        write_report(list(runs), self.file(PAGE_FILE), title=title, claims=claims)
        return self.file(PAGE_FILE)

    def finished(self) -> bool:
        """Whether the run ended: its page, written last, is there."""
        return self.file(PAGE_FILE).is_file()

    def cached(self, name: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """The tensors saved as ``name`` in the folder, or ``compute()``'s, saved there first (resume after a kill)."""
        path = self.file(name)
        if path.exists():
            tensors, _ = load_tensors(path)
            return tensors
        tensors = compute()
        save_tensors(path, tensors, {"cached": path.stem})
        return tensors
