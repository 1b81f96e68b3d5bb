"""Run output made safe for a page: Markdown without raw HTML, links without scripts, PNGs that decode.

:func:`markdown_html` renders a run's ``report.md`` with raw HTML turned off (a ``<script>`` in a
claim's text shows as text), keeps only ``http``, ``https``, ``mailto`` and relative link targets,
and embeds the report's own figures with :func:`image_data`, which embeds a PNG only once it has
decoded (:func:`hmcam.reporting.png.png_problem`) and otherwise raises :class:`FigureSkipped`, so
the page shows a note in its place.
"""

from __future__ import annotations

import base64
import html
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import quote

import markdown
from markdown.treeprocessors import Treeprocessor

from hmcam.reporting.png import png_problem

#: The suffix of the figures a page embeds: PNG only, each checked to decode.
FIGURE_SUFFIX = ".png"
#: The link targets a page keeps (besides relative ones and fragments); any other scheme loses its link.
SAFE_SCHEMES = ("http", "https", "mailto")


class FigureSkipped(ValueError):
    """A figure the page leaves out (not a PNG that decodes), with the reason."""


def image_data(path: Path) -> str:
    """The PNG figure at ``path`` as a ``data:`` URI, once it has decoded.

    A missing file is a ValueError; a file that is not a PNG that decodes is a :class:`FigureSkipped`
    naming why.
    """
    if not path.is_file():
        raise ValueError(f"the report refers to {path}, which does not exist")
    if path.suffix.lower() != FIGURE_SUFFIX:
        raise FigureSkipped(f"{path.name} is not shown: figures must be PNG files, got {path.suffix or 'no suffix'}")
    data = path.read_bytes()
    problem = png_problem(data)
    if problem is not None:
        raise FigureSkipped(f"{path.name} is not shown: it does not hold image/png data that decodes ({problem})")
    return f"data:image/png;base64,{base64.b64encode(data).decode('ascii')}"


def skipped_note(message: str) -> str:
    """A note in the page where a figure was left out."""
    return f'<p class="skipped">{html.escape(message)}</p>'


def scheme(reference: str) -> str | None:
    """The lower-case URL scheme of ``reference`` (``javascript``, ``https``), or None for a relative one."""
    # Browsers ignore control characters and spaces in a scheme ("java\tscript:"); so does this check.
    match = re.match(r"([a-z][a-z0-9+.-]*):", re.sub(r"[\x00-\x20]", "", reference), re.IGNORECASE)
    return match.group(1).lower() if match else None


def is_local(reference: str) -> bool:
    """Whether ``reference`` is a path relative to the run folder (no scheme, not absolute, no fragment)."""
    return scheme(reference) is None and not reference.startswith(("/", "#", "\\"))


class _RunFigures(Treeprocessor):
    """Embeds a run report's own figures (or leaves a note) and drops links to scripts and other schemes."""

    def __init__(self, md: markdown.Markdown, folder: Path) -> None:
        super().__init__(md)
        self.folder = folder
        self.used: set[str] = set()

    def figure(self, element: ElementTree.Element) -> ElementTree.Element:
        """``element`` (an ``img``) with its figure embedded, or a note in its place."""
        reference = element.get("src", "")
        inside = (self.folder / reference).resolve().is_relative_to(self.folder.resolve())
        if not is_local(reference) or not inside:
            raise ValueError(
                f"{self.folder / 'report.md'} refers to {reference}; a report may only show its own figures"
            )
        self.used.add(reference)
        try:
            element.set("src", image_data(self.folder / reference))
        except FigureSkipped as skipped:
            note = ElementTree.Element("span", {"class": "skipped"})
            note.text, note.tail = f"[{skipped}]", element.tail
            return note
        return element

    def run(self, root: ElementTree.Element) -> None:
        """Rewrite every ``img`` and ``a`` under ``root`` in place."""
        for parent in list(root.iter()):
            for index, child in enumerate(list(parent)):
                if child.tag == "img":
                    parent[index] = self.figure(child)
                elif child.tag == "a":
                    target = child.get("href", "")
                    kind = scheme(target)
                    if kind is not None and kind not in SAFE_SCHEMES:
                        del child.attrib["href"]


def markdown_html(text: str, folder: Path) -> tuple[str, set[str]]:
    """Markdown rendered to HTML with its local figures embedded; also the names of the figures it used.

    Raw HTML in the Markdown is not passed through but escaped, so the report's text (claims,
    configuration values) can hold no markup.
    """
    renderer = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    figures = _RunFigures(renderer, folder)
    renderer.treeprocessors.register(figures, "hmcam_figures", -1)  # after the unescaping of backslash escapes
    return renderer.convert(text), figures.used


def href(relative: str) -> str:
    """A relative path as a link target: percent-encoded, so a name such as ``javascript:x.csv`` stays a file."""
    return quote(relative, safe="/")
