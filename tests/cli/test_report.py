"""``hmcam report``: run folders to one page from the command line; bad folders are named in one line."""

from __future__ import annotations

import json
from pathlib import Path

from hmcam.cli import main
from hmcam.reporting.figures import save_bar_chart


def finished_run(folder: Path, title: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"claims": []}))
    save_bar_chart(folder / "bars.png", ["a"], [0.5], "share")
    (folder / "report.md").write_text(f"# {title}\n\n![bars](bars.png)\n")
    return folder


def test_report_writes_the_page_and_its_markdown(capsys, tmp_path: Path) -> None:
    runs = [finished_run(tmp_path / name, name) for name in ("first", "second")]
    page = tmp_path / "out" / "all.html"
    assert main(["report", *map(str, runs), "--out", str(page), "--title", "both runs"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"html": str(page), "markdown": str(page.with_suffix(".md"))}
    html = page.read_text()
    assert "<title>both runs</title>" in html and html.count("data:image/png;base64,") == 2


def test_a_folder_that_is_not_a_run_is_named(capsys, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "is not a finished hmcam run folder: it has no report.md" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()
