"""One page for one or many runs: a self-contained HTML report and the Markdown beside it.

Every hmcam run folder (training, evaluation, attack, experiment, demo, reproduction) holds
``config.json`` (what was asked), ``results.json`` (what came out, with the ``run`` record of
:mod:`hmcam.reporting.provenance`: versions, machine, wall time), ``report.md`` and its figures.
:func:`write_report` renders any number of them into one HTML page that needs nothing else: the
figures are embedded as base64 data, the style is inline and there is no script, so the page opens
offline, from a mail attachment or a laptop without hmcam. It starts with an overview of the runs
and every claim of the paper they check (the paper's number, ours, the verdict), then gives each run's
own report, its environment and its configuration. The same content is written as Markdown beside
the page for diffs and version control.

Everything a run wrote reaches the page escaped: the report's Markdown is rendered with raw HTML
turned off (a ``<script>`` in a claim's text shows as text), links keep only ``http``, ``https``,
``mailto`` and relative targets, and every configuration value, claim, file name and title is
escaped. Only PNG figures that decode (:func:`hmcam.reporting.png.png_problem`) are embedded; any
other figure is left out with a note saying why.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmcam.core.storage import atomic_write
from hmcam.core.version import __version__
from hmcam.reporting.markup import FIGURE_SUFFIX, FigureSkipped, href, image_data, is_local, markdown_html, skipped_note
from hmcam.reporting.tables import CLAIM_COLUMNS, claim_rows, markdown_table

#: How the page colours each verdict of the claims engine (:mod:`hmcam.experiments.claims`).
VERDICT_CLASSES = {
    "supported": "supported",
    "contradicted": "contradicted",
    "inconclusive": "inconclusive",
    "untestable": "untestable",
}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d232a; line-height: 1.45; }
h1 { border-bottom: 2px solid #1d232a; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #c8ced6; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #c8ced6; padding: .25rem .55rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
img { max-width: 100%; height: auto; display: block; margin: .8rem 0; }
pre { background: #f5f7fa; padding: .7rem; overflow-x: auto; font-size: .82rem; }
code { background: #f0f2f5; padding: 0 .2rem; }
.supported { background: #d9f2dc; } .contradicted { background: #f9d9d7; }
.inconclusive { background: #fff1c7; } .untestable { background: #e4e7eb; }
.meta td:first-child { font-weight: 600; white-space: nowrap; }
.folder { color: #5a6675; font-size: .88rem; }
.skipped { color: #8a1c12; font-style: italic; }
"""


@dataclass(frozen=True)
class FinishedRun:
    """A finished run folder as the report reads it: its configuration, results, Markdown report and files."""

    path: Path
    config: dict[str, Any]
    results: dict[str, Any]
    report: str

    @property
    def name(self) -> str:
        """The run's name in the report: the experiment's name, else the folder's."""
        return str(self.config.get("experiment") or self.path.name)

    @property
    def kind(self) -> str:
        """``training``, ``evaluation``, ``attack``, ``experiment``, ``demo`` or ``reproduction``."""
        return str(self.results.get("run", {}).get("kind") or self.config.get("kind") or "run")

    @property
    def record(self) -> dict[str, Any]:
        """The ``run`` record of ``results.json`` (empty for folders written before hmcam kept one)."""
        record: dict[str, Any] = self.results.get("run") or {}
        return record

    @property
    def claims(self) -> list[dict[str, Any]]:
        """The paper's claims the run checks: ``claim``, ``paper``, ``ours``, ``verdict``."""
        return [claim for claim in self.results.get("claims", []) if isinstance(claim, dict)]

    def files(self, suffixes: Sequence[str]) -> list[Path]:
        """The folder's own files (not its subfolders') with one of ``suffixes``, sorted by name."""
        return sorted(path for path in self.path.iterdir() if path.is_file() and path.suffix.lower() in suffixes)


def _read_json(path: Path, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ValueError(f"{path.parent} is not a finished hmcam run folder: it has no {path.name}")
        return {}
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(payload).__name__}")
    return payload


def read_run(folder: str | os.PathLike[str]) -> FinishedRun:
    """Read a run folder; a ValueError names what is missing or unreadable (``report.md``, ``results.json``)."""
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"run folder {path} does not exist or is not a folder")
    report = path / "report.md"
    if not report.is_file():
        raise ValueError(f"{path} is not a finished hmcam run folder: it has no report.md")
    return FinishedRun(
        path=path,
        config=_read_json(path / "config.json", required=False),
        results=_read_json(path / "results.json", required=True),
        report=report.read_text(encoding="utf-8"),
    )


def _shift_headings(text: str, top: int) -> str:
    """Markdown ``text`` with its headings shifted so that the highest becomes level ``top`` (fences untouched)."""
    lines = text.splitlines()
    fenced = False
    levels = []
    for line in lines:
        fenced ^= line.startswith("```")
        match = re.match(r"(#{1,6}) ", line)
        if match and not fenced:
            levels.append(len(match.group(1)))
    if not levels:
        return text
    shift = top - min(levels)
    out, fenced = [], False
    for line in lines:
        fenced ^= line.startswith("```")
        match = re.match(r"(#{1,6}) ", line)
        if match and not fenced:
            line = "#" * min(6, len(match.group(1)) + shift) + line[len(match.group(1)) :]
        out.append(line)
    return "\n".join(out)


class _Html(str):
    """Text that is already HTML (a link the page builds itself), put into a table cell unescaped."""


def _cell(value: Any) -> str:
    if isinstance(value, _Html):
        return str(value)
    return html.escape("-" if value is None or value == "" else str(value))


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(column)}</th>" for column in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if classes and classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    minutes, rest = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {rest:02d} s" if minutes else f"{rest} s")


def _verdicts(run: FinishedRun) -> str:
    counts = [f"{sum(c.get('verdict') == v for c in run.claims)} {v}" for v in VERDICT_CLASSES]
    return ", ".join(count for count in counts if not count.startswith("0 ")) or "-"


def _environment_rows(run: FinishedRun) -> list[tuple[str, Any]]:
    record = run.record
    environment = record.get("environment") or {}
    packages = environment.get("packages") or {}
    machine = environment.get("processor")
    if environment.get("cpu_count") is not None:
        machine = f"{machine}, {environment['cpu_count']} cores, {environment.get('torch_threads')} torch threads"
    if environment.get("gpu"):
        machine = f"{machine}; GPU {environment['gpu']}"
    versions = ", ".join(f"{name} {version}" for name, version in packages.items() if version)
    return [
        ("command", record.get("command")),
        ("started", record.get("started")),
        ("finished", record.get("finished")),
        ("wall time", _duration(record.get("wall_seconds"))),
        ("device", environment.get("device")),
        ("machine", machine),
        ("platform", environment.get("platform")),
        ("versions", f"Python {environment['python']}, {versions}" if environment.get("python") else None),
    ]


def _anchor(index: int, run: FinishedRun) -> str:
    return f"run-{index}-" + re.sub(r"[^a-z0-9]+", "-", run.name.lower()).strip("-")


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def _page_claims(
    runs: Sequence[FinishedRun], claims: Sequence[dict[str, Any]] | None
) -> list[tuple[str, dict[str, Any]]]:
    """The claims table's rows: each run's own claims, or ``claims`` (judged across the runs, by experiment)."""
    if claims is None:
        return [(run.name, claim) for run in runs for claim in run.claims]
    return [(str(claim.get("experiment", "")), claim) for claim in claims]


def render_html(
    runs: Sequence[FinishedRun], title: str, page_folder: Path, claims: Sequence[dict[str, Any]] | None = None
) -> str:
    """The self-contained HTML page of ``runs`` (figures embedded, no script, no network).

    Links to each run's CSV and JSON files are relative to ``page_folder``, where the page is written.
    ``claims``, when given, replace the runs' own in the claims table (a reproduction's, adjusted across
    all its experiments).
    """
    overview = _table(
        [
            (
                _Html(f'<a href="#{_anchor(index, run)}">{index + 1}. {html.escape(run.name)}</a>'),
                run.kind,
                _duration(run.record.get("wall_seconds")),
                run.record.get("finished"),
                _verdicts(run),
            )
            for index, run in enumerate(runs)
        ],
        ["run", "kind", "wall time", "finished", "claims"],
    )
    rows, claim_classes = [], []
    for name, claim in _page_claims(runs, claims):
        row = claim_rows([claim])[0]
        rows.append((name, *(row[column] for column in CLAIM_COLUMNS)))
        claim_classes.append(VERDICT_CLASSES.get(str(claim.get("verdict")), ""))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Rendered by hmcam {html.escape(__version__)} from {len(runs)} run folder(s). Everything on this page, "
        "figures included, is inside this one file.</p>",
        "<h2>Runs</h2>",
        overview,
    ]
    if rows:
        parts += [
            "<h2>The paper's claims</h2>",
            "<p>Each claim with the paper's figure, ours, the estimate of its declared statistic with the 95% "
            "interval, the Holm-adjusted p-value and the verdict: <em>supported</em> or <em>contradicted</em> "
            "when the adjusted test is significant in or against the paper's direction, <em>inconclusive</em> "
            "when neither (the run's <code>claims.csv</code> gives the smallest effect it could have detected), "
            "<em>untestable</em> with the reason. "
            + (
                "The claims are adjusted together, across every run on this page; each run's own table below "
                "is adjusted within that run.</p>"
                if claims is not None
                else "</p>"
            ),
            _table(rows, ["run", *CLAIM_COLUMNS], claim_classes),
        ]
    for index, run in enumerate(runs):
        body, used = markdown_html(_shift_headings(run.report, 2), run.path)
        if not body.lstrip().startswith("<h2"):
            body = f"<h2>{html.escape(run.name)}</h2>" + body
        extra = [figure for figure in run.files((FIGURE_SUFFIX,)) if figure.name not in used]
        parts += [f'<section id="{_anchor(index, run)}">', body]
        for figure in extra:
            try:
                parts.append(f'<img alt="{html.escape(figure.name)}" src="{image_data(figure)}">')
            except FigureSkipped as skipped:
                parts.append(skipped_note(str(skipped)))
        links = " ".join(
            f'<a href="{html.escape(href(_relative(path, page_folder)))}">{html.escape(path.name)}</a>'
            for path in run.files((".csv", ".json"))
        )
        parts += [
            f'<p class="folder">Folder: <code>{html.escape(str(run.path))}</code>. Files: {links or "-"}</p>',
            "<h3>Environment</h3>",
            '<table class="meta"><tbody>'
            + "".join(f"<tr><td>{html.escape(k)}</td><td>{_cell(v)}</td></tr>" for k, v in _environment_rows(run))
            + "</tbody></table>",
            "<details><summary>Configuration (<code>config.json</code>)</summary>",
            f"<pre>{html.escape(json.dumps(run.config, indent=2, sort_keys=True))}</pre></details>",
            "</section>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_markdown(
    runs: Sequence[FinishedRun], title: str, page_folder: Path, claims: Sequence[dict[str, Any]] | None = None
) -> str:
    """The page as Markdown, figure paths relative to ``page_folder`` (``claims``: see :func:`render_html`)."""
    lines = [f"# {title}", ""]
    lines.append(
        markdown_table(
            [
                {
                    "run": run.name,
                    "kind": run.kind,
                    "wall time": _duration(run.record.get("wall_seconds")),
                    "claims": _verdicts(run),
                }
                for run in runs
            ],
            ["run", "kind", "wall time", "claims"],
        )
    )
    table = [{"run": name, **claim_rows([claim])[0]} for name, claim in _page_claims(runs, claims)]
    if table:
        lines += ["## The paper's claims", "", markdown_table(table, ["run", *CLAIM_COLUMNS])]
    for run in runs:
        text = _shift_headings(run.report, 2)
        if not text.lstrip().startswith("## "):
            text = f"## {run.name}\n\n{text}"

        def relocate(match: re.Match[str], folder: Path = run.path) -> str:
            reference = match.group(2)
            if not is_local(reference):
                return match.group(0)
            return f"![{match.group(1)}]({_relative(folder / reference, page_folder)})"

        lines += [re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", relocate, text), ""]
        environment = dict(_environment_rows(run))
        lines += [
            f"Folder `{run.path}`; wall time {environment['wall time']}; "
            f"{environment['machine'] or 'machine unknown'}; {environment['versions'] or 'versions unknown'}.",
            "",
        ]
    return "\n".join(lines)


def write_report(
    folders: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    title: str | None = None,
    claims: Sequence[dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Render ``folders`` into the page ``out`` (``.html``) and its Markdown beside it; returns both paths.

    ``claims``, when given, fill the claims table instead of the runs' own (see :func:`render_html`).

    The Markdown goes to ``out`` with the suffix ``.md``, except when that is the only run's own
    ``report.md`` (a run's page written into its folder), which is left as it is.
    """
    if not folders:
        raise ValueError("the report needs at least one run folder")
    page = Path(out)
    if page.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out must name an .html file, got {page}")
    if page.is_dir():
        raise ValueError(f"--out {page} is a folder; name the page, e.g. {page / 'report.html'}")
    runs = [read_run(folder) for folder in folders]
    if title is None:
        title = f"hmcam report: {runs[0].name}" if len(runs) == 1 else f"hmcam report: {len(runs)} runs"
    page.parent.mkdir(parents=True, exist_ok=True)
    written = {"html": str(page)}
    markdown_file = page.with_suffix(".md")
    own = len(runs) == 1 and markdown_file.resolve() == (runs[0].path / "report.md").resolve()
    if not own:
        atomic_write(markdown_file, render_markdown(runs, title, page.parent, claims).encode())
        written["markdown"] = str(markdown_file)
    atomic_write(page, render_html(runs, title, page.parent, claims).encode())
    return written
