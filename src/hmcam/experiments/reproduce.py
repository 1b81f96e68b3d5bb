"""``hmcam reproduce``: every experiment of the paper in order, into one folder, ending with one report.

A reproduction scale (:data:`REPRODUCE_SCALES`) names the scale every experiment of the registry
(:data:`hmcam.experiments.registry.REPRODUCED`) runs at: each experiment's own scale of that name.
:func:`run_reproduce` runs the experiments in
the paper's order, each into ``RUN_DIR/NAME`` (the attack experiments share one trained zoo in
``RUN_DIR/models``), and records each finished one in ``RUN_DIR/progress.json``: a rerun skips
those and continues the one a kill interrupted from its own caches. It ends by rendering the page of
every experiment and one page of them all, ``RUN_DIR/report.html`` with ``report.md`` beside it. The
claims of all experiments are Holm-adjusted again as one family (:func:`~hmcam.experiments.claims.readjust`)
in the reproduction's ``results.json``, ``results.csv`` and ``claims.csv`` and its page's claims table.
``results.json`` also records each zoo model's training time (:func:`zoo_training`), which the
experiments' times leave out when the zoo was trained beforehand. As a sensitivity check,
:data:`SENSITIVITY` runs again at the two eps of the calibration grid next to
the chosen one (``RUN_DIR/sensitivity/``); ``sensitivity.csv`` sets its verdicts side by side.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hmcam.experiments.calibration import calibrate
from hmcam.experiments.claims import FIELDS as CLAIM_FIELDS
from hmcam.experiments.claims import readjust
from hmcam.experiments.framework import CLAIMS_TABLE, RunOptions
from hmcam.experiments.registry import EXPERIMENTS, REPRODUCED
from hmcam.experiments.setup import AttackScale
from hmcam.experiments.zoo import ZOOS, zoo_folder
from hmcam.experiments.zoo_experiment import run_at
from hmcam.reporting.run_folder import REPORT_FILE, RESULTS_FILE, RunFolder, json_ready

#: The experiment re-run at the calibrated eps's neighbours in the grid, as a sensitivity check of its verdicts.
SENSITIVITY = "transfer"
#: The folder of those runs, and the table that sets their verdicts beside the main run's.
SENSITIVITY_FOLDER, SENSITIVITY_TABLE = "sensitivity", "sensitivity.csv"
#: The finished experiments, and the log of starts and ends, in the reproduction's folder.
PROGRESS_FILE, LOG_FILE = "progress.json", "reproduce.log"


@dataclass(frozen=True)
class ReproduceScale:
    """A reproduction's size: the name of the scale every experiment runs at, and what that means."""

    name: str
    description: str

    def of(self, experiment: str) -> Any:
        """The scale of experiment ``experiment`` (a registry name) that this reproduction runs it at."""
        return EXPERIMENTS[experiment].load().scale(self.name)


#: ``smoke`` runs in minutes on 2 CPU cores (the tests use it); ``small`` is each experiment's own ``small``
#: scale, sized for a 2-core CPU (``docs/results.md`` gives its measured time); ``paper`` is every experiment at
#: the paper's settings.
REPRODUCE_SCALES: dict[str, ReproduceScale] = {
    "smoke": ReproduceScale("smoke", "every experiment at smoke scale: seconds each"),
    "small": ReproduceScale(
        "small",
        "every experiment at small scale on Fashion-MNIST, sized for 2 CPU cores within 100 minutes: the attack "
        "experiments on three zoos, the training comparison with five seeds per arm and a budget sweep",
    ),
    "paper": ReproduceScale("paper", "every experiment at the paper's settings: days on a GPU"),
}


def configuration(scale: ReproduceScale) -> dict[str, Any]:
    """What ``config.json`` records beside its kind: the scale, the experiments in order, each one's scale."""
    return {
        "scale": scale.name,
        "description": scale.description,
        "experiments": list(REPRODUCED),
        "scales": {name: json_ready(dataclasses.asdict(scale.of(name))) for name in REPRODUCED},
    }


def _log(folder: RunFolder, line: str) -> None:
    with open(folder.file(LOG_FILE), "a", encoding="utf-8") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def _finished(folder: RunFolder) -> dict[str, Any]:
    """The experiments ``progress.json`` records as finished (none without one); a ValueError names a damaged one."""
    progress_file = folder.file(PROGRESS_FILE)
    if not progress_file.exists():
        return {}
    try:
        finished: dict[str, Any] = json.loads(progress_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{progress_file} is not valid JSON ({error}); remove it to redo every experiment") from None
    return finished


def _sensitivity_runs(scale: ReproduceScale, top: RunFolder, options: RunOptions) -> dict[str, tuple[float, Path]]:
    """The sensitivity runs of :data:`SENSITIVITY`: key in ``progress.json`` -> (eps, folder); none without a grid."""
    attack = scale.of(SENSITIVITY)
    if not attack.eps_grid:
        return {}
    neighbours = calibrate(attack, options).neighbours()
    return {
        f"{SENSITIVITY_FOLDER}/{SENSITIVITY}-eps{eps:.4g}": (
            eps,
            top.path / SENSITIVITY_FOLDER / f"{SENSITIVITY}-eps{eps:.4g}",
        )
        for eps in neighbours
    }


def _sensitivity_rows(main: Path, runs: dict[str, tuple[float, Path]], eps: float) -> list[dict[str, Any]]:
    """Each claim of the sensitivity experiment: its verdict and estimate at the calibrated eps and its neighbours."""
    found = {eps: json.loads((main / RESULTS_FILE).read_text())["claims"]}
    for other, folder in runs.values():
        found[other] = json.loads((folder / RESULTS_FILE).read_text())["claims"]
    rows = []
    for claim in found[eps]:
        row: dict[str, Any] = {"claim": claim["claim"]}
        for value in sorted(found):
            match = next(c for c in found[value] if c["name"] == claim["name"])
            label = f"eps {value:.4g}" + (" (chosen)" if value == eps else "")
            row[label] = (
                f"{match['verdict']} ({match['estimate']})" if match["estimate"] is not None else match["verdict"]
            )
        rows.append(row)
    return rows


def zoo_training(scale: AttackScale, models: Path) -> list[dict[str, Any]]:
    """Each zoo model's training time, from its run folder: the zoos are trained once and shared (or reused).

    A model trained by an earlier invocation into the same ``models`` folder counts its own time here,
    so the reproduction's record tells its whole cost even when the zoo was trained beforehand.
    """
    rows = []
    for seed in scale.zoo_seeds:
        for entry in ZOOS[scale.zoo]:
            results = zoo_folder(models, seed) / entry.label / RESULTS_FILE
            seconds = json.loads(results.read_text()).get("seconds") if results.is_file() else None
            rows.append({"zoo_seed": seed, "model": entry.label, "seconds": seconds})
    return rows


def run_reproduce(
    scale: ReproduceScale,
    out: str | Path,
    *,
    device: str = "cpu",
    data_root: str | None = None,
    models_dir: str | Path | None = None,
    progress: bool = True,
    callback: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every experiment of ``scale`` (:data:`~hmcam.experiments.registry.REPRODUCED`) into ``out``, then the report.

    Finished experiments are skipped.

    ``models_dir`` is where the attack experiments' zoo is trained or found (default ``out/models``);
    ``callback(name)`` is called after each experiment finishes. Returns ``{"out", "report",
    "experiments"}``, the last with each experiment's folder, wall seconds and claims.
    """
    started = time.time()
    top = RunFolder(out, "reproduction", started=started, device=device)
    top.start(configuration(scale), "a reproduction of another scale or version")
    finished = _finished(top)
    models = Path(models_dir) if models_dir is not None else top.path / "models"
    options = RunOptions(top.path, device, data_root, models, progress=False)
    folders = {name: RunFolder(top.path / name, "experiment") for name in REPRODUCED}
    pending = [name for name in REPRODUCED if name not in finished or not folders[name].file(REPORT_FILE).exists()]
    bar = tqdm(
        total=len(REPRODUCED),
        initial=len(REPRODUCED) - len(pending),
        desc=f"reproduce {scale.name}",
        unit="experiment",
        disable=not progress,
    )
    with bar:
        for name in pending:
            bar.set_postfix_str(name)
            _log(top, f"start {name}")
            begun = time.time()
            # Each experiment writes its own folder; what the report needs is read back from there.
            EXPERIMENTS[name].load().run(
                scale.of(name), dataclasses.replace(options, out=folders[name].path, started=begun)
            )
            seconds = time.time() - begun
            finished[name] = {"seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            top.write_json(PROGRESS_FILE, finished)
            _log(top, f"done {name} in {seconds:.0f} s")
            bar.update(1)
            if callback is not None:
                callback(name)
    sensitivity = _sensitivity_runs(scale, top, options)
    for key, (eps, path) in sensitivity.items():
        if key in finished and (path / REPORT_FILE).exists():
            continue
        _log(top, f"start {key}")
        begun = time.time()
        fixed = dataclasses.replace(scale.of(SENSITIVITY), eps=eps, eps_grid=(), calibration_images=0, calibration=None)
        run_at(EXPERIMENTS[SENSITIVITY].load(), fixed, dataclasses.replace(options, out=path, started=begun))
        finished[key] = {"seconds": round(time.time() - begun, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        top.write_json(PROGRESS_FILE, finished)
        _log(top, f"done {key} in {time.time() - begun:.0f} s")
    for folder in folders.values():
        folder.write_page()
    experiments = []
    claims = []
    for name, folder in folders.items():
        results = json.loads(folder.file(RESULTS_FILE).read_text())
        experiments.append(
            {
                "experiment": name,
                "reproduces": EXPERIMENTS[name].reproduces,
                "folder": name,
                "seconds": finished[name]["seconds"],
            }
        )
        claims += [{**claim, "experiment": name} for claim in results.get("claims", [])]
    # One Holm family for the whole reproduction: every claim of every experiment.
    claims = readjust(claims)
    total = sum(entry["seconds"] for entry in experiments)
    total += sum(finished[key]["seconds"] for key in sensitivity)
    zoo = zoo_training(scale.of(SENSITIVITY), models)
    top.write_table(claims, CLAIM_FIELDS)
    top.write_table(claims, CLAIM_FIELDS, CLAIMS_TABLE)
    rows = []
    if sensitivity:
        chosen = json.loads(folders[SENSITIVITY].file(RESULTS_FILE).read_text())["scale"]["eps"]
        rows = _sensitivity_rows(folders[SENSITIVITY].path, sensitivity, chosen)
        top.write_table(rows, list(rows[0]), SENSITIVITY_TABLE)
    top.write_results(
        {
            "scale": scale.name,
            "experiments": experiments,
            "experiment_seconds": round(total, 1),
            "zoo_training": zoo,
            "zoo_training_seconds": round(sum(row["seconds"] or 0.0 for row in zoo), 1),
            "claims": claims,
            "sensitivity": {"experiment": SENSITIVITY, "rows": rows},
        }
    )
    title = f"hmcam reproduce --scale {scale.name}"
    pages = [folder.path for folder in folders.values()] + [path for _, path in sensitivity.values()]
    page = top.write_overview(pages, title, claims)
    _log(top, f"report {page}")
    return {"out": str(top.path), "report": str(page), "experiments": experiments, "claims": claims}
