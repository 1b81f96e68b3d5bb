"""Where dataset files are looked for and where downloads go.

Search order: the explicit ``root`` argument (the CLI's ``--data-root``), ``$HMCAM_DATA``, the user
cache ``~/.cache/hmcam``, then system folders that distribution packages install into (Debian's
``dataset-fashion-mnist`` puts its files in ``/usr/share/datasets/fashion-mnist``). Each of these
is a *base* folder holding one sub-folder per dataset. Downloads go into the first base among the
first three that is writable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "HMCAM_DATA"
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset split is in none of the searched folders and could not be downloaded."""


@dataclass(frozen=True)
class SearchLocation:
    """One base folder in the search order and why it is searched (``root argument``, ``$HMCAM_DATA``, ...)."""

    path: Path
    source: str
    writable_target: bool


def user_cache_dir() -> Path:
    """The per-user cache base folder, ``~/.cache/hmcam``."""
    return Path.home() / ".cache" / "hmcam"


def search_locations(root: str | os.PathLike[str] | None = None) -> list[SearchLocation]:
    """The base folders to search, in order, without duplicates; ``writable_target`` marks download candidates."""
    candidates: list[SearchLocation] = []
    if root is not None:
        candidates.append(SearchLocation(Path(root).expanduser(), "root argument / --data-root", True))
    env = os.environ.get(ENV_VAR, "")
    if env:
        candidates.append(SearchLocation(Path(env).expanduser(), f"${ENV_VAR}", True))
    candidates.append(SearchLocation(user_cache_dir(), "user cache", True))
    candidates.extend(SearchLocation(path, "system location", False) for path in SYSTEM_DIRS)
    unique: list[SearchLocation] = []
    seen: set[Path] = set()
    for location in candidates:
        key = Path(os.path.abspath(location.path))
        if key not in seen:
            seen.add(key)
            unique.append(location)
    return unique


def is_writable(path: Path) -> bool:
    """Whether ``path`` is, or could be created as, a folder this process can write into."""
    probe = Path(os.path.abspath(path))
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def download_base(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The first writable base folder among root, ``$HMCAM_DATA`` and the user cache, or None."""
    for location in search_locations(root):
        if location.writable_target and is_writable(location.path):
            return location.path
    return None


def locate(
    subfolders: Sequence[str],
    present: Callable[[Path], bool],
    root: str | os.PathLike[str] | None = None,
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """Search every base folder's ``subfolders`` in order for one where ``present(folder)`` is true.

    Returns that folder (or None) and the list of ``(folder, source)`` pairs looked at, which is what
    a not-found message should show.
    """
    searched: list[tuple[Path, str]] = []
    for location in search_locations(root):
        for sub in subfolders:
            folder = location.path / sub if sub != "." else location.path
            searched.append((folder, location.source))
            if folder.is_dir() and present(folder):
                return folder, searched
    return None, searched
