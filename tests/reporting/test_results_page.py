"""``hmcam results``: a finished reproduction published, its results page and README block generated from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hmcam.cli import main
from hmcam.reporting.results_page import (
    END,
    START,
    publish,
    readme_summary,
    render,
    replace_block,
    stale_files,
    write_page,
)
from hmcam.reporting.tables import interval_text

ROOT = Path(__file__).resolve().parents[2]
README = "# Project\n\nIntro.\n\n## Reproduce the paper\n\nText before.\n\n{START}\nold findings\n{END}\n\n## Install\n"


@pytest.fixture(scope="module")
def published(smoke_reproduction: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke reproduction published into a fresh folder."""
    return publish(smoke_reproduction, tmp_path_factory.mktemp("published") / "results" / "smoke")


def _results(folder: Path) -> dict[str, Any]:
    results: dict[str, Any] = json.loads((folder / "results.json").read_text())
    return results


def _readme(folder: Path) -> Path:
    readme = folder / "README.md"
    readme.write_text(README.format(START=START, END=END))
    return readme


def test_publish_copies_the_tables_json_and_figures_only(smoke_reproduction: Path, published: Path) -> None:
    files = {path.relative_to(published).as_posix() for path in published.rglob("*") if path.is_file()}
    assert {path.rsplit(".", 1)[-1] for path in files} <= {"json", "csv", "png"}
    assert {"results.json", "claims.csv", "config.json", "progress.json", "sensitivity.csv"} <= files
    assert not any(part in path for path in files for part in ("cache", "models/", "sensitivity/", "evidence.json"))
    assert _results(published)["run"]["environment"]["packages"]["torch"]
    for entry in _results(smoke_reproduction)["experiments"]:
        folder = smoke_reproduction / entry["folder"]
        wanted = {f"{entry['folder']}/{name}" for name in ("results.json", "results.csv", "claims.csv")}
        wanted |= {f"{entry['folder']}/{path.name}" for path in folder.glob("*.png")}
        assert wanted <= files, entry["experiment"]
        assert (published / entry["folder"] / "results.json").read_bytes() == (folder / "results.json").read_bytes()
    assert [path.name for path in published.parent.iterdir()] == [published.name]


def test_publish_refuses_an_unfinished_run_and_replaces_a_published_folder(
    smoke_reproduction: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copyfile(smoke_reproduction / "results.json", unfinished / "results.json")
    with pytest.raises(ValueError, match="not a finished reproduction"):
        publish(unfinished, tmp_path / "out")
    assert main(["results", "publish", str(unfinished), "--to", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no report.md" in error
    assert not (tmp_path / "out").exists()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.csv").write_text("old\n")
    assert main(["results", "publish", str(smoke_reproduction), "--to", str(dest)]) == 0
    assert not (dest / "stale.csv").exists() and (dest / "results.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "unfinished"]


def test_the_page_gives_every_claim_its_verdict_and_estimate_and_each_experiment_its_minutes(
    published: Path,
) -> None:
    page = render(published)
    results = _results(published)
    lines = page.splitlines()
    assert results["claims"]
    for claim in results["claims"]:
        start = f"| {claim['experiment']} | {claim['claim'].replace('|', chr(92) + '|')} |"
        rows = [line for line in lines if line.startswith(start)]
        assert rows, claim["claim"]
        assert interval_text(claim) in rows[0] and rows[0].endswith(f"| {claim['verdict']} |")
    for entry in results["experiments"]:
        row = next(line for line in lines if line.startswith(f"| `{entry['experiment']}` |"))
        assert row.endswith(f"| {entry['seconds'] / 60:.1f} |")
    assert results["run"]["command"] is None or results["run"]["command"] in page
    assert "Inconclusive" in page and "not a refutation" in page and "## Sensitivity to eps" in page
    # The further tables an experiment names for the page follow its results table: at-efficiency's convergence.
    training = published / "at-efficiency"
    assert _results(training)["shown_tables"] == ["convergence.csv"]
    header = "| study | arm | budget | last_epoch_gain | next_budget | autoattack_gain | converged |"
    section = page[page.index("## at-efficiency") :]
    assert section.index("`convergence.csv`:") < section.index(header) < section.index("| claim | paper |")
    for verdict in {claim["verdict"] for claim in results["claims"]}:
        count = sum(claim["verdict"] == verdict for claim in results["claims"])
        assert f"{count} {verdict}" in page and f"{count} {verdict}" in readme_summary(published)


def test_writing_the_page_copies_its_figures_and_rewrites_only_the_readme_block(
    published: Path, tmp_path: Path
) -> None:
    readme, markdown = _readme(tmp_path), tmp_path / "docs" / "results.md"
    written = write_page(published, markdown, readme)
    page = markdown.read_text()
    figures = [line.split("](", 1)[1].rstrip(")") for line in page.splitlines() if line.startswith("![")]
    assert figures and all((markdown.parent / link).is_file() for link in figures)
    assert {path.suffix for path in written} == {".md", ".png"}
    text = readme.read_text()
    before, after = README.split("{START}")[0], README.split("{END}")[1]
    assert text.startswith(before + START + "\n") and text.endswith(END + after)
    assert "old findings" not in text and "[docs/results.md](docs/results.md)" in text
    assert replace_block(text, readme_summary(published)) == text
    write_page(published, markdown, readme)
    assert readme.read_text() == text and markdown.read_text() == page
    with pytest.raises(ValueError, match="expected one"):
        replace_block("no markers here", "block")


def test_check_exits_1_naming_a_stale_file_and_0_when_fresh(
    published: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme, markdown = _readme(tmp_path), tmp_path / "docs" / "results.md"
    argv = ["results", "page", str(published), "--markdown", str(markdown), "--readme", str(readme)]
    with pytest.raises(SystemExit) as stale:
        main([*argv, "--check"])
    assert stale.value.code == 1 and str(markdown) in capsys.readouterr().err
    assert not markdown.exists() and "old findings" in readme.read_text()
    assert main(argv) == 0
    assert main([*argv, "--check"]) == 0
    assert stale_files(published, markdown, readme) == []
    markdown.write_text(markdown.read_text().replace("supported", "holds"))
    (markdown.parent / "results" / "leftover.png").write_bytes(b"")
    assert stale_files(published, markdown, readme) == [markdown, markdown.parent / "results" / "leftover.png"]
    with pytest.raises(SystemExit) as stale:
        main([*argv, "--check"])
    assert stale.value.code == 1 and f"{markdown} is stale" in capsys.readouterr().err


def test_committed_results_page_is_generated() -> None:
    """docs/results.md, its figures and the README block are what results/small gives (hmcam results page)."""
    results, markdown, readme = ROOT / "results" / "small", ROOT / "docs" / "results.md", ROOT / "README.md"
    assert markdown.read_text() == render(results), "docs/results.md is stale: run `make results-page`"
    block = readme.read_text().split(START, 1)[1].split(END, 1)[0]
    assert block.strip("\n") == readme_summary(results).strip("\n"), "README.md's results block is stale"
    assert stale_files(results, markdown, readme) == []
