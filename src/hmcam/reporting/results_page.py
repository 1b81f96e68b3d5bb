"""The results page: a finished reproduction, published into a committed folder and rendered into Markdown.

:func:`publish` copies the part of a finished ``hmcam reproduce`` folder that a page needs (JSON, CSV
and PNG files: no caches, checkpoints or HTML) into a folder such as ``results/small``. From that
folder, :func:`render` writes ``docs/results.md`` and :func:`readme_summary` the README's block between
:data:`START` and :data:`END`; every number on both comes from the published files.
:func:`write_page` writes them (with the page's figure copies, which MkDocs serves only from under
``docs/``) and :func:`stale_files` names those that differ from what the published results give.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hmcam.core.storage import atomic_write, current_umask
from hmcam.reporting.tables import CLAIM_COLUMNS, claim_rows, interval_text, markdown_table

#: The markers of the README's generated block.
START, END = "<!-- results:start -->", "<!-- results:end -->"
#: The files of the reproduction's own folder that are published.
#: The key of an experiment's ``results.json`` naming its further tables this page shows after ``results.csv``.
SHOWN_TABLES = "shown_tables"
TOP_FILES = ("config.json", "results.json", "results.csv", "claims.csv", "sensitivity.csv", "progress.json")
#: The kinds of file published from each experiment's folder (caches, checkpoints and pages are left out).
EXPERIMENT_SUFFIXES = (".json", ".csv", ".png")
#: Files of those kinds that are caches, not results.
LEFT_OUT = ("evidence.json",)
#: The verdicts in the order the pages count them (any other found is counted after them).
VERDICT_ORDER = ("supported", "contradicted", "inconclusive", "untestable")

INCONCLUSIVE = (
    "**What the verdicts mean.** *Supported*: the claim's declared test finds the paper's effect, beyond "
    "its margin, after Holm's adjustment over every claim on this page. *Contradicted*: the test finds the "
    "opposite. *Inconclusive*: no effect was detected either way at this run's size; the `mde` column gives "
    "the smallest effect the run could have detected, so an inconclusive claim is not a refutation, only "
    "a sign that any effect is smaller than that or needs a larger run. *Untestable*: this run cannot test "
    "the claim: it has no data for it, or a condition the claim declared fails (the reason says which)."
)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


def _results(folder: Path) -> dict[str, Any]:
    """The reproduction's ``results.json``; a ValueError names a folder that is not a reproduction."""
    results = _load(folder / "results.json")
    if not isinstance(results, dict) or "experiments" not in results or "claims" not in results:
        raise ValueError(f"{folder / 'results.json'} is not a reproduction's (no experiments or claims)")
    return results


def _experiment_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix in EXPERIMENT_SUFFIXES and path.name not in LEFT_OUT
    )


def publish(run_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy what the results page needs of the finished reproduction ``run_dir`` into ``dest``; returns ``dest``.

    The top folder's tables and JSON, and each experiment's JSON, CSV and PNG files (its ``run``
    record, with the environment, is in its ``results.json``). ``dest`` is replaced at once: the copy
    is made beside it and renamed. A run without its ``report.md`` (not finished) is refused.
    """
    source, target = Path(run_dir), Path(dest)
    if not (source / "report.md").is_file():
        raise ValueError(f"{source} is not a finished reproduction (no report.md); finish it with hmcam reproduce")
    results = _results(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())
        for name in TOP_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        for entry in results["experiments"]:
            (staging / entry["folder"]).mkdir()
            for path in _experiment_files(source / entry["folder"]):
                shutil.copyfile(path, staging / entry["folder"] / path.name)
        retired = target.parent / f".{target.name}-retired"
        if target.exists():
            target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min {rest} s" if hours else f"{minutes} min {rest} s"


def _verdict_counts(claims: Sequence[Mapping[str, Any]]) -> str:
    found = [str(claim.get("verdict")) for claim in claims]
    order = [*VERDICT_ORDER, *sorted(set(found) - set(VERDICT_ORDER))]
    return ", ".join(f"{found.count(verdict)} {verdict}" for verdict in order)


def _escape(value: Any) -> Any:
    return value.replace("|", "\\|").replace("\n", " ") if isinstance(value, str) else value


def _number(text: str) -> Any:
    """A CSV cell as a number where it is one (so the table rounds it), else the text."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _csv_table(path: Path) -> str:
    with open(path, newline="", encoding="utf-8") as table:
        reader = csv.DictReader(table)
        columns = list(reader.fieldnames or [])
        rows = [{column: _escape(_number(row.get(column) or "")) for column in columns} for row in reader]
    return markdown_table(rows, [_escape(column) for column in columns])


def _shown_tables(folder: Path) -> list[Path]:
    """The further tables an experiment's ``results.json`` names under :data:`SHOWN_TABLES` that exist."""
    path = folder / "results.json"
    if not path.is_file():
        return []
    results = _load(path)
    names = (results.get(SHOWN_TABLES) if isinstance(results, dict) else None) or []
    return [folder / name for name in names if (folder / name).is_file()]


def _claims_table(claims: Sequence[Mapping[str, Any]], experiment: bool) -> str:
    rows = [
        {**{key: _escape(value) for key, value in row.items()}, "experiment": claim.get("experiment")}
        for claim, row in zip(claims, claim_rows(claims), strict=True)
    ]
    return markdown_table(rows, (("experiment",) if experiment else ()) + CLAIM_COLUMNS)


def _run_lines(results: Mapping[str, Any]) -> list[str]:
    run = results.get("run") or {}
    environment = run.get("environment") or {}
    packages = environment.get("packages") or {}
    lines = []
    if run.get("started"):
        lines.append(f"- started {run['started']}, finished {run.get('finished')} (UTC)")
    machine = [
        environment.get("processor"),
        f"{environment['cpu_count']} cores" if environment.get("cpu_count") else None,
        f"{environment['torch_threads']} torch threads" if environment.get("torch_threads") else None,
        f"GPU {environment['gpu']}" if environment.get("gpu") else "no GPU" if environment else None,
    ]
    if any(machine):
        lines.append("- machine: " + ", ".join(part for part in machine if part))
    versions = [f"Python {environment['python']}"] if environment.get("python") else []
    versions += [f"{name} {version}" for name, version in packages.items() if version]
    if versions:
        lines.append("- software: " + ", ".join(versions))
    if environment.get("platform"):
        lines.append(f"- platform: {environment['platform']}")
    return lines


def _zoo_time(results: Mapping[str, Any]) -> str:
    """The sentence on the zoos' training time, which the experiments' times leave out when trained beforehand."""
    rows = results.get("zoo_training") or []
    if not rows:
        return ""
    seeds: dict[Any, float] = {}
    for row in rows:
        seeds[row["zoo_seed"]] = seeds.get(row["zoo_seed"], 0.0) + float(row["seconds"] or 0.0)
    per_seed = ", ".join(f"seed {seed}: {_duration(seconds)}" for seed, seconds in seeds.items())
    return (
        f" The attack experiments' zoos are trained once into the run's models folder and reused; their training "
        f"runs took {_duration(float(results.get('zoo_training_seconds') or 0.0))} in all ({per_seed}; each "
        "model's time is in `results.json`, `zoo_training`). A zoo trained before the run started, or while "
        "other jobs loaded the machine, counts here with the time it took then, not in the experiments' minutes."
    )


def _wall_time(results: Mapping[str, Any]) -> str:
    experiments = float(results.get("experiment_seconds") or 0.0)
    wall = (results.get("run") or {}).get("wall_seconds")
    text = f"The experiments (with the sensitivity re-runs) took **{_duration(experiments)}**"
    if wall is None:
        return text + "."
    if wall >= experiments:
        return f"It took **{_duration(wall)}** from start to report: {_duration(experiments)} of experiments " + (
            f"(with the sensitivity re-runs) and {_duration(wall - experiments)} of the rest (start-up and pages)."
        )
    return text + f" over several invocations (the run was resumed); the last took {_duration(wall)}."


def _experiment_rows(folder: Path, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {
            "experiment": f"`{entry['experiment']}`",
            "reproduces": _escape(entry.get("reproduces")),
            "minutes": _minutes(entry["seconds"]),
        }
        for entry in results["experiments"]
    ]
    progress = _load(folder / "progress.json") if (folder / "progress.json").is_file() else {}
    for key, entry in progress.items():
        if key.startswith("sensitivity/"):
            rows.append(
                {"experiment": f"`{key}`", "reproduces": "sensitivity re-run", "minutes": _minutes(entry["seconds"])}
            )
    return rows


def _calibration(folder: Path, results: Mapping[str, Any]) -> list[str]:
    found: list[tuple[dict[str, Any], list[str]]] = []
    for entry in results["experiments"]:
        path = folder / entry["folder"] / "results.json"
        scale = (_load(path) if path.is_file() else {}).get("scale")
        calibration = scale.get("calibration") if isinstance(scale, dict) else None
        if not calibration:
            continue
        for known, names in found:
            if known == calibration:
                names.append(entry["experiment"])
                break
        else:
            found.append((calibration, [entry["experiment"]]))
    lines = []
    for calibration, names in found:
        start, stop = calibration["held_out"]
        lines += [
            f"Used by {', '.join(f'`{name}`' for name in names)}: eps **{calibration['chosen']:.4g}**, the eps of "
            f"the grid whose PGD white-box success on held-out test images {start} to {stop - 1} (not attacked "
            f"later) is closest to the paper's {calibration['target_white_box']:.4g}% (the paper's black-box "
            f"success: {calibration['paper_black_box']:.4g}%; {calibration['budget']} gradient steps, seed "
            f"{calibration['seed']}).",
            "",
            markdown_table(calibration["rows"], ("eps", "white_box", "black_box", "chosen")),
            "",
            _calibration_time(calibration),
        ]
    return lines


def _calibration_time(calibration: Mapping[str, Any]) -> str:
    """Its cost: the calibration is cached beside the zoo, so a run that reuses it does not count its time."""
    seconds = calibration.get("seconds")
    if seconds is None:
        return (
            "The calibration was computed before this run, by a version that did not record its time, and is "
            "cached beside the zoo: its PGD runs are not in the experiments' minutes."
        )
    return (
        f"Its PGD runs took {_duration(float(seconds))}; it is cached beside the zoo, so they are in the first "
        "attack experiment's minutes only when that experiment computed it."
    )


def _figures(folder: Path, results: Mapping[str, Any]) -> dict[str, list[Path]]:
    return {
        entry["folder"]: sorted((folder / entry["folder"]).glob("*.png"))
        for entry in results["experiments"]
        if (folder / entry["folder"]).is_dir()
    }


def render(results_dir: str | os.PathLike[str], figures: str = "results") -> str:
    """``docs/results.md`` from the published reproduction ``results_dir``; figure links start with ``figures``."""
    folder = Path(results_dir)
    results = _results(folder)
    claims = results["claims"]
    command = (results.get("run") or {}).get("command") or f"hmcam reproduce --scale {results.get('scale')}"
    lines = [
        f"# Results of a `{results.get('scale')}` reproduction",
        "",
        "<!-- Generated by `hmcam results page` from the published run; do not edit by hand. -->",
        "",
        "Every number on this page comes from the files of one run of",
        "",
        f"```bash\n{command}\n```",
        "",
        *_run_lines(results),
        "",
        _wall_time(results) + _zoo_time(results),
        "",
        markdown_table(_experiment_rows(folder, results), ("experiment", "reproduces", "minutes")),
    ]
    calibration = _calibration(folder, results)
    if calibration:
        lines += ["## Calibration of eps", "", *calibration]
    lines += [
        "## Every claim, in one table",
        "",
        f"{len(claims)} claims: {_verdict_counts(claims)}. Holm's adjustment runs over all of them as one family.",
        "",
        _claims_table(claims, experiment=True),
        INCONCLUSIVE,
        "",
    ]
    inconclusive = [claim for claim in claims if claim.get("verdict") == "inconclusive"]
    if inconclusive:
        rows = [
            {
                "experiment": claim.get("experiment"),
                "claim": _escape(claim.get("claim")),
                "estimate [95% CI]": interval_text(claim),
                "mde": claim.get("mde"),
                "unit": claim.get("unit"),
            }
            for claim in inconclusive
        ]
        lines += [markdown_table(rows, ("experiment", "claim", "estimate [95% CI]", "mde", "unit"))]
    for entry in results["experiments"]:
        name = entry["experiment"]
        lines += [f"## {name}", "", f"Reproduces {entry.get('reproduces')}; {_minutes(entry['seconds'])} minutes.", ""]
        table = folder / entry["folder"] / "results.csv"
        if table.is_file():
            lines += [_csv_table(table)]
        for shown in _shown_tables(folder / entry["folder"]):
            lines += [f"`{shown.name}`:", "", _csv_table(shown)]
        own = [claim for claim in claims if claim.get("experiment") == name]
        if own:
            lines += [_claims_table(own, experiment=False)]
        for figure in _figures(folder, results).get(entry["folder"], []):
            lines += [f"![{name}: {figure.stem}]({figures}/{entry['folder']}/{figure.name})", ""]
    rows = (results.get("sensitivity") or {}).get("rows") or []
    if rows:
        lines += [
            "## Sensitivity to eps",
            "",
            f"`{results['sensitivity']['experiment']}` again at the eps next to the chosen one in the calibration "
            "grid: each claim's verdict (and estimate) at each eps.",
            "",
            markdown_table([{key: _escape(value) for key, value in row.items()} for row in rows], list(rows[0])),
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def readme_summary(results_dir: str | os.PathLike[str], page: str = "docs/results.md") -> str:
    """The README's block: scale, wall time, the verdicts and a compact claims table, linking to ``page``."""
    results = _results(Path(results_dir))
    claims = results["claims"]
    wall = (results.get("run") or {}).get("wall_seconds") or results.get("experiment_seconds") or 0.0
    rows = [
        {
            "experiment": claim.get("experiment"),
            "claim": _escape(claim.get("claim")),
            "estimate [95% CI]": interval_text(claim),
            "p (Holm)": row["p (Holm)"],
            "verdict": claim.get("verdict"),
        }
        for claim, row in zip(claims, claim_rows(claims), strict=True)
    ]
    return (
        f"The committed `{results.get('scale')}` run took {_duration(float(wall))}; of its {len(claims)} claims, "
        f"{_verdict_counts(claims)} (Holm's adjustment over all of them). Every table and figure, the calibration "
        f"of eps and the sensitivity check: [{page}]({page}).\n\n"
        + markdown_table(rows, ("experiment", "claim", "estimate [95% CI]", "p (Holm)", "verdict"))
    )


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between :data:`START` and :data:`END` replaced by ``block`` (the rest unchanged)."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"expected one {START} before one {END}")
    before, rest = text.split(START)
    _, after = rest.split(END)
    body = block.strip("\n")
    return f"{before}{START}\n{body}\n{END}{after}"


def _expected(results_dir: Path, markdown: Path, readme: Path | None) -> dict[Path, bytes]:
    """Each generated file's path and its contents: the page, its figure copies and the README."""
    figures = markdown.with_suffix("")
    link = os.path.relpath(figures, markdown.parent).replace(os.sep, "/")
    expected = {markdown: render(results_dir, link).encode()}
    for experiment, paths in _figures(results_dir, _results(results_dir)).items():
        expected.update({figures / experiment / path.name: path.read_bytes() for path in paths})
    if readme is not None:
        page = os.path.relpath(markdown, readme.parent).replace(os.sep, "/")
        expected[readme] = replace_block(readme.read_text(), readme_summary(results_dir, page)).encode()
    return expected


def stale_files(
    results_dir: str | os.PathLike[str], markdown: str | os.PathLike[str], readme: str | os.PathLike[str] | None
) -> list[Path]:
    """The generated files that differ from what ``results_dir`` gives (figure copies no longer made included)."""
    page, figures = Path(markdown), Path(markdown).with_suffix("")
    expected = _expected(Path(results_dir), page, None if readme is None else Path(readme))
    stale = [path for path, content in expected.items() if not path.is_file() or path.read_bytes() != content]
    extra = sorted(path for path in figures.rglob("*") if path.is_file() and path not in expected)
    return stale + extra


def write_page(
    results_dir: str | os.PathLike[str], markdown: str | os.PathLike[str], readme: str | os.PathLike[str] | None
) -> list[Path]:
    """Write the page ``markdown``, its figure copies (in the folder of its name) and the README block.

    Returns the files written. The figure folder is replaced as a whole, so figures no longer made go.
    """
    page, figures = Path(markdown), Path(markdown).with_suffix("")
    expected = _expected(Path(results_dir), page, None if readme is None else Path(readme))
    figures.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{figures.name}-", dir=figures.parent))
    try:
        for path, content in expected.items():
            if figures in path.parents:
                copy = staging / path.relative_to(figures)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(content)
        for folder in (staging, *(path for path in staging.rglob("*") if path.is_dir())):
            os.chmod(folder, 0o777 & ~current_umask())
        shutil.rmtree(figures, ignore_errors=True)
        staging.rename(figures)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for path, content in expected.items():
        if figures not in path.parents:
            atomic_write(path, content)
    return list(expected)
