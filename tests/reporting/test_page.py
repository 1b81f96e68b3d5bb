"""The report page: self-contained HTML and Markdown from run folders, checked in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from hmcam.reporting.figures import save_bar_chart
from hmcam.reporting.page import _shift_headings, read_run, write_report
from hmcam.reporting.provenance import run_record
from hmcam.reporting.run_folder import RunFolder

CLAIM = {
    "claim": "HMCAM transfers better than PGD",
    "paper": "+7.7 points",
    "ours": "+0.8 points",
    "estimate": 0.8,
    "ci_low": -0.4,
    "ci_high": 2.0,
    "p_adjusted": 0.21,
    "verdict": "inconclusive",
}


def make_run(folder: Path, name: str, claims: list[dict[str, str]] | None = None, report: str | None = None) -> Path:
    """A finished run folder as hmcam writes one: config, results with a run record, a figure, a table, a report."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"kind": "experiment", "experiment": name, "eps": 0.05}))
    results: dict[str, Any] = {"claims": claims or [], "run": run_record("experiment", 0.0, "cpu")}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "results.csv").write_text("attack,success\npgd,0.5\n")
    save_bar_chart(folder / "success.png", ["pgd", "hmcam"], [0.5, 0.75], "success rate", name)
    save_bar_chart(folder / "extra.png", ["a"], [0.25], "share")
    text = (
        report
        or f"# {name}\n\nSome text.\n\n| attack | success |\n|---|---|\n| pgd | 0.5 |\n\n![success](success.png)\n"
    )
    (folder / "report.md").write_text(text)
    return folder


def test_the_page_embeds_every_figure_and_lists_claims_runs_and_environment(tmp_path: Path) -> None:
    first = make_run(tmp_path / "runs" / "transfer", "transfer", [CLAIM])
    second = make_run(tmp_path / "runs" / "ensemble", "ensemble", [{**CLAIM, "verdict": "supported"}])
    written = write_report([first, second], tmp_path / "out" / "page.html", title="two runs")
    page = Path(written["html"]).read_text()
    assert written["markdown"] == str(tmp_path / "out" / "page.md")
    # Both figures of both runs are embedded (the one report.md shows and the one it does not), nothing is fetched.
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 4 and all(source.startswith("data:image/png;base64,") for source in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]) == (first / "success.png").read_bytes()
    assert (
        len(re.findall(r'<a href="#', page)) == 2
        and "<script" not in page
        and "http://" not in page
        and "https://" not in page
    )
    # The claims table: one row per claim, coloured by verdict; the report's own table is rendered.
    assert '<tr class="inconclusive"><td>transfer</td><td>HMCAM transfers better than PGD</td>' in page
    assert "<td>+0.80 [-0.40, +2.00]</td><td>0.21</td>" in page
    assert '<tr class="supported"><td>ensemble</td>' in page
    assert "<td>pgd</td>" in page and "<h2>transfer</h2>" in page
    # The overview links to each run's section.
    for anchor in re.findall(r'<a href="#([^"]+)">', page):
        assert f'<section id="{anchor}">' in page
    assert "AMD" in page or "Intel" in page or "<td>machine</td>" in page
    assert 'href="../runs/transfer/results.csv"' in page  # links relative to the page
    markdown = (tmp_path / "out" / "page.md").read_text()
    assert "![success](../runs/transfer/success.png)" in markdown and "| transfer | HMCAM transfers" in markdown


def test_a_run_page_in_its_own_folder_leaves_its_report_md_alone(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "demo")
    before = (run / "report.md").read_text()
    page = RunFolder(run, "experiment").write_page()
    assert page == run / "report.html" and (run / "report.md").read_text() == before
    assert read_run(run).name == "demo" and read_run(run).kind == "experiment"


def test_headings_shift_so_the_highest_becomes_the_given_level() -> None:
    assert _shift_headings("## a\n### b\n```\n# code\n```", 2) == "## a\n### b\n```\n# code\n```"
    assert _shift_headings("# a\n## b", 2) == "## a\n### b"
    assert _shift_headings("### a\ntext", 2) == "## a\ntext"


def test_bad_folders_and_figures_are_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        write_report([tmp_path / "missing"], tmp_path / "r.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no report.md"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")
    with pytest.raises(ValueError, match="at least one run folder"):
        write_report([], tmp_path / "r.html")
    run = make_run(tmp_path / "run", "x")
    with pytest.raises(ValueError, match="must name an .html file"):
        write_report([run], tmp_path / "r.pdf")
    (run / "results.json").write_text("{broken")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        write_report([run], tmp_path / "r.html")
    remote = make_run(tmp_path / "remote", "r", report="# r\n\n![x](https://example.org/x.png)\n")
    with pytest.raises(ValueError, match="may only show its own figures"):
        write_report([remote], tmp_path / "r.html")
    missing = make_run(tmp_path / "gone", "g", report="# g\n\n![x](nothere.png)\n")
    with pytest.raises(ValueError, match="nothere.png, which does not exist"):
        write_report([missing], tmp_path / "r.html")
    outside = make_run(tmp_path / "outside", "o", report="# o\n\n![x](../run/success.png)\n")
    with pytest.raises(ValueError, match="may only show its own figures"):
        write_report([outside], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()  # no half-written page
    (missing / "nothere.png").write_text("not an image")  # a figure that does not decode is left out, with a note
    page = Path(write_report([missing], tmp_path / "r.html")["html"]).read_text()
    assert "nothere.png is not shown: it does not hold image/png data that decodes (no PNG signature)" in page


def test_the_page_loads_in_chromium_without_errors_and_every_image_decodes(tmp_path: Path, check_page) -> None:
    first = make_run(tmp_path / "transfer", "transfer", [CLAIM])
    second = make_run(tmp_path / "ensemble", "ensemble", [{**CLAIM, "verdict": "contradicted"}])
    page = Path(write_report([first, second], tmp_path / "report.html")["html"])
    check = check_page(page)
    assert check.images == ["ok"] * 4 and check.console == [] and check.shows_something


def test_the_chromium_check_catches_a_broken_image_a_console_error_and_a_blank_page(tmp_path: Path, check_page) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<html><body><img src="data:image/png;base64,AAAA"><script>undefinedFunction();</script></body></html>'
    )
    check = check_page(broken)
    assert check.images == ["broken"] and any("undefinedFunction" in line for line in check.console)
    assert not check.shows_something


HOSTILE = '<script>alert("x")</script> & "quoted" <img src=x onerror=alert(1)>'


def _markup(page: str) -> set[str]:
    """The tag names of every element in ``page``."""
    return {tag.lower() for tag in re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", page)}


def test_every_string_a_run_wrote_is_escaped(tmp_path: Path) -> None:
    """Configuration values, claim text, titles, file names and the report's text reach the page as text."""
    run = make_run(
        tmp_path / "run",
        "hostile",
        [{**CLAIM, "claim": HOSTILE, "paper": HOSTILE}],
        report=f"# Run {HOSTILE}\n\n| claim | note |\n|---|---|\n| {HOSTILE} | <b>x</b> |\n\n"
        '<div onclick="alert(1)">raw block</div>\n\n'
        "[a script](javascript:alert(1)) [hidden](JaVa\tScript:alert(2)) [data](data:text/html,x) "
        "[paper](https://arxiv.org/abs/1) [table](results.csv)\n\n![success](success.png)\n",
    )
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "note": HOSTILE, "experiment": f"hostile {HOSTILE}"}))
    (run / "a<b>&c.csv").write_text("x\n1\n")
    (run / "javascript:alert(3).json").write_text("{}")
    page = Path(write_report([run], tmp_path / "out" / "page.html", title=f"title {HOSTILE}")["html"]).read_text()
    # The only elements are the page's own: no script, no injected img/div/b, and no event handler attribute.
    assert _markup(page) <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "a", "table", "thead",
        "tbody", "tr", "th", "td", "section", "img", "code", "pre", "details", "summary", "em",
    }  # fmt: skip
    assert "<script" not in page and "<div" not in page and "<b>" not in page
    assert not re.search(r"<[^>]*\son[a-z]+=", page), "an event handler attribute reached the page"
    assert len(re.findall(r"<img ", page)) == 2  # success.png (referenced) and extra.png (not)
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quoted&quot;"
    assert f"<title>title {escaped}" in page and f"<h1>title {escaped}" in page  # the title
    assert f"<td>{escaped}" in page  # the claim's text and the paper's number in the claims table
    assert "&quot;note&quot;: &quot;&lt;script&gt;alert(\\&quot;x\\&quot;)" in page  # the configuration
    assert '&lt;script&gt;alert("x")&lt;/script&gt;' in page  # the report's own text, as text
    assert "&lt;div onclick" in page and "<td>&lt;b&gt;x&lt;/b&gt;</td>" in page
    # File names: escaped as text, percent-encoded as link targets, so a name is never a scheme.
    assert '<a href="../run/a%3Cb%3E%26c.csv">a&lt;b&gt;&amp;c.csv</a>' in page
    assert 'href="../run/javascript%3Aalert%283%29.json"' in page
    # Links to scripts and data lose their target; web and relative links keep theirs.
    for target in re.findall(r'href="([^"]*)"', page):
        assert re.match(r"(#|https://|\.\./run/|results\.csv$)", target), target
        assert ":" not in target.split("//", 1)[-1], target
    assert "<a>a script</a>" in page and "<a>hidden</a>" in page and "<a>data</a>" in page
    assert '<a href="https://arxiv.org/abs/1">paper</a>' in page and '<a href="results.csv">table</a>' in page


def test_only_pngs_that_decode_are_embedded(tmp_path: Path) -> None:
    run = make_run(tmp_path / "<run>", "figures", report="# figures\n\n![success](success.png)\n\n![fake](fake.png)\n")
    real = (run / "extra.png").read_bytes()
    (run / "fake.png").write_bytes(b"<svg onload=alert(1)></svg>")  # a .png that is not one
    (run / "a<b.png").write_bytes(real[:-30])  # truncated: the signature is right, the chunks are not
    corrupted = bytearray(real)
    corrupted[60] ^= 0xFF  # one flipped byte inside a chunk: its CRC no longer matches
    (run / "flipped.png").write_bytes(bytes(corrupted))
    (run / "photo.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    page = Path(write_report([run], tmp_path / "page.html")["html"]).read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    embedded = sorted(base64.b64decode(source.split(",", 1)[1]) for source in sources)
    assert embedded == sorted([(run / "success.png").read_bytes(), real])  # the two real figures, nothing else
    assert "<svg" not in page and "photo.jpg" not in page
    assert "fake.png is not shown: it does not hold image/png data that decodes (no PNG signature)" in page
    assert "a&lt;b.png is not shown" in page and "truncated" in page
    assert "flipped.png is not shown" in page and "fails its CRC check" in page
    assert "<a<b" not in page and "Folder: <code>" in page and "&lt;run&gt;" in page
