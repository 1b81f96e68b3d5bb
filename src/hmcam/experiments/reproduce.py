"""``hmcam reproduce``: every experiment of the paper in order, into one folder, ending with one report.

A reproduction scale (:data:`REPRODUCE_SCALES`) fixes the attack experiments' scale
(:class:`~hmcam.experiments.setup.AttackScale`) and the training comparison's
(:class:`~hmcam.experiments.at_efficiency.Scale`). :func:`run_reproduce` runs the experiments in
the paper's order, each into ``RUN_DIR/NAME`` (the attack experiments share one trained zoo in
``RUN_DIR/models``), and records each finished one in ``RUN_DIR/progress.json``: a rerun skips
those and continues the one a kill interrupted from its own caches. It ends by rendering the page of
every experiment and one page of them all, ``RUN_DIR/report.html`` with ``report.md`` beside it.
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

from hmcam.experiments.at_efficiency import SCALES as TRAINING_SCALES
from hmcam.experiments.at_efficiency import Scale as TrainingScale
from hmcam.experiments.at_efficiency import plan, restrict, run_efficiency
from hmcam.experiments.registry import ATTACK_EXPERIMENTS
from hmcam.experiments.setup import ATTACK_SCALES, AttackScale, RunOptions
from hmcam.reporting.run_folder import REPORT_FILE, RESULTS_FILE, RunFolder

#: The experiments in the order of the paper's Section 5: attacks (5.2), then learning (5.3 to 5.6).
ORDER = (
    "transfer",
    "ensemble",
    "iterations",
    "step-size",
    "diversity",
    "at-efficiency",
    "few-sample",
    "targeted",
    "all-or-nothing",
)
#: What the training comparison reproduces (the attack experiments say it in their registry).
AT_EFFICIENCY = "Tables 4, 5, 7 and Fig. 5: adversarial training methods at equal cost"
#: The finished experiments, and the log of starts and ends, in the reproduction's folder.
PROGRESS_FILE, LOG_FILE = "progress.json", "reproduce.log"
#: The columns of the reproduction's ``results.csv``: every experiment's claims.
CLAIM_COLUMNS = ("experiment", "claim", "paper", "ours", "verdict")


@dataclass(frozen=True)
class ReproduceScale:
    """The size of a reproduction: the attack experiments' scale and the training comparison's."""

    name: str
    description: str
    attack: AttackScale
    training: TrainingScale


#: ``smoke`` runs in under a minute on 2 CPU cores (the tests use it); ``small`` is sized for a 2-core CPU
#: (the README gives its measured time); ``paper`` is every experiment at the paper's settings.
REPRODUCE_SCALES: dict[str, ReproduceScale] = {
    "smoke": ReproduceScale(
        "smoke", "every experiment at smoke scale: seconds each", ATTACK_SCALES["smoke"], TRAINING_SCALES["smoke"]
    ),
    "small": ReproduceScale(
        "small",
        "every experiment at small scale on Fashion-MNIST, cut to fit about an hour on 2 CPU cores: the attack "
        "experiments on 500 test images with seed 0, the training comparison on 20,000 training examples",
        dataclasses.replace(ATTACK_SCALES["small"], images=500, seeds=(0,)),
        dataclasses.replace(
            restrict(TRAINING_SCALES["small"], train_limit=20_000),
            description="Fashion-MNIST (the first 20k training images / 10k test), LeNet, eps 0.1, "
            "40 passes per example, 2 seeds",
        ),
    ),
    "paper": ReproduceScale(
        "paper",
        "every experiment at the paper's settings: days on a GPU",
        ATTACK_SCALES["paper"],
        TRAINING_SCALES["paper"],
    ),
}


def configuration(scale: ReproduceScale) -> dict[str, Any]:
    """What ``config.json`` records beside its kind: the scale, the experiments in order, both scales' settings."""
    return {
        "scale": scale.name,
        "description": scale.description,
        "experiments": list(ORDER),
        "attack_scale": dataclasses.asdict(scale.attack),
        "training_plan": plan(scale.training),
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


def _run_one(name: str, scale: ReproduceScale, folder: Path, options: RunOptions) -> None:
    # Each experiment writes its own folder; what the report needs is read back from there.
    if name == "at-efficiency":
        run_efficiency(scale.training, folder, device=options.device, data_root=options.data_root, progress=False)
    else:
        ATTACK_EXPERIMENTS[name].run(scale.attack, dataclasses.replace(options, out=folder, started=time.time()))


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
    """Run every experiment of ``scale`` in :data:`ORDER` into ``out`` (skipping finished ones), then the report.

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
    folders = {name: RunFolder(top.path / name, "experiment") for name in ORDER}
    pending = [name for name in ORDER if name not in finished or not folders[name].file(REPORT_FILE).exists()]
    bar = tqdm(
        total=len(ORDER),
        initial=len(ORDER) - len(pending),
        desc=f"reproduce {scale.name}",
        unit="experiment",
        disable=not progress,
    )
    with bar:
        for name in pending:
            bar.set_postfix_str(name)
            _log(top, f"start {name}")
            begun = time.time()
            _run_one(name, scale, folders[name].path, options)
            seconds = time.time() - begun
            finished[name] = {"seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            top.write_json(PROGRESS_FILE, finished)
            _log(top, f"done {name} in {seconds:.0f} s")
            bar.update(1)
            if callback is not None:
                callback(name)
    for folder in folders.values():
        folder.write_page()
    experiments = []
    claims = []
    for name, folder in folders.items():
        results = json.loads(folder.file(RESULTS_FILE).read_text())
        reproduces = AT_EFFICIENCY if name == "at-efficiency" else ATTACK_EXPERIMENTS[name].reproduces
        experiments.append(
            {"experiment": name, "reproduces": reproduces, "folder": name, "seconds": finished[name]["seconds"]}
        )
        claims += [{"experiment": name, **claim} for claim in results.get("claims", [])]
    total = sum(entry["seconds"] for entry in experiments)
    top.write_table(claims, CLAIM_COLUMNS)
    top.write_results(
        {"scale": scale.name, "experiments": experiments, "experiment_seconds": round(total, 1), "claims": claims}
    )
    title = f"hmcam reproduce --scale {scale.name}"
    page = top.write_overview([folder.path for folder in folders.values()], title)
    _log(top, f"report {page}")
    return {"out": str(top.path), "report": str(page), "experiments": experiments, "claims": claims}
