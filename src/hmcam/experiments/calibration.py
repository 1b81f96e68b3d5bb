"""The attack experiments' eps, chosen by calibration on held-out images before any HMCAM run (PGD only).

The paper's effects live in a regime where white-box PGD nearly always succeeds and black-box PGD
about half of the time (Table 2, CIFAR-10 at eps 2/255: 92.7% and 52.7%). A fixed eps on another
dataset can sit far from it (Fashion-MNIST at 0.05: black-box about 14%), where the differences the
paper claims cannot show. :func:`calibrate` runs PGD, with the scale's budget, from every natural
model of the zoo (of every zoo, for a scale of several zoo seeds) at each eps of the scale's grid, on
test images that no experiment evaluates (the ``calibration_images`` after the attacked ones), and
picks the eps whose mean white-box success is closest to the paper's. The choice is cached beside
the zoo, so every experiment of a reproduction uses the same eps, and recorded in each experiment's
results.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from hmcam.core.batching import fetch
from hmcam.core.distributed import resolve_device
from hmcam.core.storage import atomic_write_json
from hmcam.data import load_dataset
from hmcam.evaluation import predict
from hmcam.experiments.attack_run import AttackSettings
from hmcam.experiments.framework import RunOptions
from hmcam.experiments.setup import AttackScale, hits_on_targets
from hmcam.experiments.zoo import ZOOS, trained_zoo

#: The paper's mean PGD success, percent (Table 2: CIFAR-10, eps 2/255, N = 100): the regime calibrated to.
PAPER_PGD_WHITE_BOX = 92.7
PAPER_PGD_BLACK_BOX = 52.7
#: The PGD seed of the calibration (one run: the choice of eps must not depend on the experiments' seeds).
SEED = 0


@dataclass(frozen=True)
class Calibration:
    """What the calibration measured: mean PGD success (percent) per eps of ``grid``, and the eps chosen.

    ``held_out`` is the ``[start, stop)`` range of test indices it attacked, never evaluated by an
    experiment; ``white_box`` and ``black_box`` are means over the natural sources (black-box: over
    natural source/target pairs) and over the zoos, success counted among the images each target
    classifies correctly.
    """

    grid: tuple[float, ...]
    white_box: tuple[float, ...]
    black_box: tuple[float, ...]
    chosen: float
    held_out: tuple[int, int]
    budget: int
    seed: int = SEED
    target_white_box: float = PAPER_PGD_WHITE_BOX
    paper_black_box: float = PAPER_PGD_BLACK_BOX
    #: Wall seconds its PGD runs took when computed (None in a calibration saved before they were recorded).
    seconds: float | None = None

    @property
    def index(self) -> int:
        """The position of the chosen eps in the grid."""
        return self.grid.index(self.chosen)

    def neighbours(self) -> tuple[float, ...]:
        """The eps of the grid next to the chosen one (for a sensitivity check of the verdicts)."""
        return tuple(self.grid[i] for i in (self.index - 1, self.index + 1) if 0 <= i < len(self.grid))

    def rows(self) -> list[dict[str, Any]]:
        """One row per eps: white- and black-box success and whether it was chosen."""
        return [
            {"eps": eps, "white_box": round(white, 2), "black_box": round(black, 2), "chosen": eps == self.chosen}
            for eps, white, black in zip(self.grid, self.white_box, self.black_box, strict=True)
        ]

    @classmethod
    def from_dict(cls, found: dict[str, Any]) -> Calibration:
        """The calibration :meth:`to_dict` wrote."""
        return cls(
            grid=tuple(float(eps) for eps in found["grid"]),
            white_box=tuple(float(rate) for rate in found["white_box"]),
            black_box=tuple(float(rate) for rate in found["black_box"]),
            chosen=float(found["chosen"]),
            held_out=(int(found["held_out"][0]), int(found["held_out"][1])),
            budget=int(found["budget"]),
            seed=int(found["seed"]),
            target_white_box=float(found["target_white_box"]),
            paper_black_box=float(found["paper_black_box"]),
            seconds=None if found.get("seconds") is None else float(found["seconds"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the rows."""
        return {**dataclasses.asdict(self), "rows": self.rows()}


def choose_eps(grid: Sequence[float], white_box: Sequence[float], target: float = PAPER_PGD_WHITE_BOX) -> float:
    """The eps of ``grid`` whose white-box success is closest to ``target`` (the smaller eps on a tie)."""
    if not grid or len(grid) != len(white_box):
        raise ValueError("calibration needs one white-box success per eps of a non-empty grid")
    return min(zip(grid, white_box, strict=True), key=lambda pair: (abs(pair[1] - target), pair[0]))[0]


def _cache_key(scale: AttackScale) -> dict[str, Any]:
    return {
        "zoo": scale.zoo,
        "dataset": scale.dataset,
        "grid": list(scale.eps_grid),
        "budget": scale.budget,
        "held_out": [scale.images, scale.images + scale.calibration_images],
        "zoo_seeds": list(scale.zoo_seeds),
    }


def calibrate(scale: AttackScale, options: RunOptions) -> Calibration:
    """Run the calibration of ``scale`` on its zoo (trained or reloaded into ``options.models``), or reload it."""
    if not scale.eps_grid:
        raise ValueError(f"scale {scale.name!r} has no eps grid to calibrate on")
    cache = options.models / f"calibration-{scale.name}.json"
    key = _cache_key(scale)
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return Calibration.from_dict(saved["calibration"])
    started = time.time()
    start, stop = key["held_out"]
    test = load_dataset(scale.dataset, "test", root=options.data_root, limit=stop)
    if len(test.labels) < stop:
        raise ValueError(f"{scale.dataset} has {len(test.labels)} test images; calibration needs {stop}")
    images, labels = fetch(test, range(start, stop))
    device = resolve_device(options.device)
    images, labels = images.to(device), labels.to(device)
    natural = [entry.label for entry in ZOOS[scale.zoo] if not entry.adversarial]
    if len(natural) < 2:
        raise ValueError(f"calibration needs two natural models for black-box success; zoo {scale.zoo!r} has {natural}")
    per_zoo = [_success(scale, options, seed, natural, images, labels) for seed in scale.zoo_seeds]
    white = [statistics.fmean(zoo[0][i] for zoo in per_zoo) for i in range(len(scale.eps_grid))]
    black = [statistics.fmean(zoo[1][i] for zoo in per_zoo) for i in range(len(scale.eps_grid))]
    chosen = choose_eps(scale.eps_grid, white)
    calibration = Calibration(
        tuple(scale.eps_grid),
        tuple(white),
        tuple(black),
        chosen,
        (start, stop),
        scale.budget,
        seconds=round(time.time() - started, 1),
    )
    options.models.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache, {"key": key, "calibration": calibration.to_dict()})
    return calibration


def _success(
    scale: AttackScale, options: RunOptions, seed: int, natural: list[str], images: Tensor, labels: Tensor
) -> tuple[list[float], list[float]]:
    """Mean white- and black-box PGD success (percent) per eps of the grid on the zoo of ``seed``."""
    models = trained_zoo(
        scale.zoo,
        options.models,
        labels=tuple(natural),
        seed=seed,
        device=options.device,
        data_root=options.data_root,
        progress=options.progress,
    )
    return pgd_success(models, scale.eps_grid, scale.budget, images, labels, scale.batch_size)


def pgd_success(
    models: Mapping[str, nn.Module],
    grid: Sequence[float],
    budget: int,
    images: Tensor,
    labels: Tensor,
    batch_size: int = 250,
) -> tuple[list[float], list[float]]:
    """Per eps of ``grid``: PGD's mean white-box success over ``models`` and black-box over their pairs (percent).

    PGD has ``budget`` steps and seed :data:`SEED`; success counts among the images each target
    classifies correctly.
    """
    natural = list(models)
    correct = {label: (predict(models[label], images) == labels).cpu() for label in natural}
    white, black = [], []
    for eps in grid:
        settings = [AttackSettings("pgd", eps=eps, steps=budget, seed=SEED)]
        rates: dict[tuple[str, str], float] = {}
        for source in natural:
            hits = hits_on_targets(dict(models), source, settings, natural, images, labels, batch_size)[0]
            for j, target in enumerate(natural):
                rates[(source, target)] = 100 * float(hits[j, correct[target]].float().mean())
        white.append(statistics.fmean(rates[(s, t)] for s, t in rates if s == t))
        black.append(statistics.fmean(rates[(s, t)] for s, t in rates if s != t))
    return white, black


def calibrated(scale: AttackScale, options: RunOptions) -> AttackScale:
    """``scale`` at its calibrated eps, with the calibration recorded; unchanged when it has no grid."""
    if not scale.eps_grid:
        return scale
    calibration = calibrate(scale, options)
    return dataclasses.replace(scale, eps=calibration.chosen, calibration=calibration.to_dict())
