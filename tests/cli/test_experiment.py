"""``hmcam experiment``: the training comparison from the command line, its flags and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hmcam.cli import main


def test_at_efficiency_runs_a_restricted_scale_and_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    arguments = ["experiment", "at-efficiency", "--scale", "smoke", "--out", str(out), "--no-progress"]
    assert main([*arguments, "--methods", "natural", "--seeds", "4", "--budget", "1", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == str(out / "report.md") and (out / "report.md").exists()
    # With one arm no comparison can be made: every claim is untestable, none is dropped.
    assert printed["claims"] and {claim["verdict"] for claim in printed["claims"]} == {"untestable"}
    results = json.loads((out / "results.json").read_text())
    assert set(results["studies"]["fashion-mnist-mlp"]["arms"]) == {"natural"}
    assert main([*arguments, "--methods", "natural,nope"]) == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
    assert main([*arguments, "--methods", "natural,,cat"]) == 2
    assert "--methods must be comma-separated names" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["experiment", "at-efficiency", "--out", str(blocker / "x"), "--no-progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
