from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hmcam.core.storage import current_umask
from hmcam.reporting.run_folder import RunFolder, json_ready


def test_a_run_folder_writes_the_five_files_with_the_umask_mode(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", "evaluation", started=0.0, device="cpu")
    folder.start({"eps": 0.1})
    folder.write_results({"accuracy": 0.5, "loss": math.nan})
    folder.write_table([{"name": "pgd", "accuracy": 0.5}], ["name", "accuracy"])
    assert not folder.finished()
    page = folder.write_report("# Evaluation\n\nAccuracy 0.5.\n")
    assert folder.finished() and page == tmp_path / "run" / "report.html"
    names = {path.name for path in (tmp_path / "run").iterdir()}
    assert names == {"config.json", "results.json", "results.csv", "report.md", "report.html"}
    for path in (tmp_path / "run").iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config == {"kind": "evaluation", "eps": 0.1}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["loss"] is None and results["run"]["kind"] == "evaluation"
    assert results["run"]["environment"]["device"] == "cpu"


def test_a_rerun_resumes_and_another_configuration_or_kind_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    RunFolder(out, "experiment").start({"scale": "smoke"})
    RunFolder(out, "experiment").start({"scale": "smoke"})  # the same run continues
    with pytest.raises(ValueError, match="holds a run of another plan"):
        RunFolder(out, "experiment").start({"scale": "small"}, "a run of another plan")
    with pytest.raises(ValueError, match="holds a run of kind 'experiment', not 'attack'"):
        RunFolder(out, "attack").start({"scale": "smoke"})
    (out / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        RunFolder(out, "experiment").start({"scale": "smoke"})
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        RunFolder(tmp_path / "file", "experiment").start({})


def test_cached_tensors_are_computed_once(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, "experiment")
    calls = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"fooled": torch.tensor([True, False])}

    first = folder.cached("cache/outcome.safetensors", compute)
    again = folder.cached("cache/outcome.safetensors", compute)
    assert len(calls) == 1 and torch.equal(first["fooled"], again["fooled"])


def test_json_ready_makes_strict_json() -> None:
    assert json_ready({1: (math.inf, "a"), "p": Path("x")}) == {"1": [None, "a"], "p": "x"}
    with pytest.raises(TypeError, match="a run folder stores JSON values, not Tensor"):
        json_ready({"x": torch.tensor(0.5)})
