"""What the attack experiments share: the scale, the attacks at one gradient budget, the images, cached results.

An :class:`AttackScale` fixes the dataset, the zoo of models (:mod:`hmcam.experiments.zoo`), the
L-inf radius, the gradient budget N every iterative attack gets (HMCAM: S transitions of T = N / S
steps, as the paper's T = 50, S = 2 for N = 100), the attacked test images and the seeds. Attack
outcomes are cached in the run folder (:func:`cached`), so a killed experiment continues where it
stopped, and each experiment ends with :func:`write_outputs`: ``config.json``, ``results.json``,
``results.csv`` and the other tables, ``report.md`` and ``report.html``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hmcam.core.storage import atomic_write, atomic_write_json, load_tensors, save_tensors
from hmcam.experiments.attack_run import AttackSettings

#: The attacks of Table 2, in its row order.
TABLE_ATTACKS = ("fgsm", "pgd", "mpgd", "aifgsm", "hmcam")
#: How the tables name them.
ATTACK_LABELS = {"fgsm": "FGSM", "pgd": "PGD", "mpgd": "M-PGD", "aifgsm": "AI-FGSM", "hmcam": "HMCAM"}


@dataclass(frozen=True)
class AttackScale:
    """The size of an attack experiment: dataset and zoo, eps, budget N, HMCAM's S, images, seeds, batch."""

    name: str
    zoo: str
    dataset: str
    eps: float
    budget: int
    samples: int
    images: int
    seeds: tuple[int, ...]
    batch_size: int = 250

    def __post_init__(self) -> None:
        if self.budget % self.samples:
            raise ValueError(f"the budget N = {self.budget} must be a multiple of HMCAM's S = {self.samples}")

    def settings(self, name: str, seed: int, **changes: Any) -> AttackSettings:
        """Attack ``name`` at this scale's budget: FGSM one step, HMCAM S x (N / S), the others N steps."""
        steps = {"fgsm": 1, "hmcam": self.budget // self.samples}.get(name, self.budget)
        samples = self.samples if name == "hmcam" else 1
        fields: dict[str, Any] = {"eps": self.eps, "steps": steps, "samples": samples, "seed": seed, **changes}
        return AttackSettings(name, **fields)


#: The attack experiments' scales. ``paper`` uses the paper's CIFAR-10 setting of Section 5.2 (eps 2/255, N = 100).
ATTACK_SCALES: dict[str, AttackScale] = {
    "smoke": AttackScale("smoke", "smoke", "fashion-mnist", 0.1, budget=4, samples=2, images=48, seeds=(0,)),
    "small": AttackScale("small", "small", "fashion-mnist", 0.05, budget=20, samples=2, images=1000, seeds=(0, 1, 2)),
    "paper": AttackScale("paper", "paper", "cifar10", 2 / 255, budget=100, samples=2, images=1000, seeds=(0, 1, 2)),
}


def attack_images(scale: AttackScale, data_root: str | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """The first ``scale.images`` test images and labels of the scale's dataset, on ``device``."""
    from hmcam.core.batching import fetch
    from hmcam.data import load_dataset

    test = load_dataset(scale.dataset, "test", root=data_root, limit=scale.images)
    images, labels = fetch(test, range(len(test.labels)))
    return images.to(device), labels.to(device)


def adversarial_examples(
    model: nn.Module, settings: AttackSettings, images: Tensor, labels: Tensor, batch_size: int
) -> Tensor:
    """The attack's adversarial examples (a chain attack's last state), batch by batch, targets if targeted."""
    attack = settings.build(model)
    return torch.cat(
        [
            attack(images[start : start + batch_size], labels[start : start + batch_size])
            for start in range(0, len(images), batch_size)
        ]
    )


@dataclass
class Bench:
    """The zoo trained for a scale and the attacked images: everything an attack experiment starts from.

    ``sources`` are the naturally trained models (the paper crafts on those), ``targets`` every model
    and ``adversarial`` the adversarially trained ones; ``correct[label]`` says which images a model
    classifies correctly (on the CPU), the images success is counted among.
    """

    models: dict[str, nn.Module]
    sources: list[str]
    targets: list[str]
    adversarial: list[str]
    images: Tensor
    labels: Tensor
    correct: dict[str, Tensor]


@dataclass(frozen=True)
class RunOptions:
    """Where and how an attack experiment runs: its folder, device, data and model folders, progress bars.

    ``models_dir`` holds the trained zoo, shared between experiments given the same folder
    (default: ``out / "models"``); ``started`` is when this invocation began, for the wall time in
    ``results.json``.
    """

    out: Path
    device: str = "cpu"
    data_root: str | None = None
    models_dir: Path | None = None
    progress: bool = True
    started: float = field(default_factory=time.time)

    @property
    def models(self) -> Path:
        """The folder of the trained zoo."""
        return self.models_dir if self.models_dir is not None else self.out / "models"


def bench(scale: AttackScale, options: RunOptions) -> Bench:
    """Train (or reload) the scale's zoo into ``options.models`` and load the attacked images."""
    from hmcam.core.distributed import resolve_device
    from hmcam.evaluation import predict
    from hmcam.experiments.zoo import ZOOS, trained_zoo

    models = trained_zoo(
        scale.zoo, options.models, device=options.device, data_root=options.data_root, progress=options.progress
    )
    images, labels = attack_images(scale, options.data_root, resolve_device(options.device))
    entries = ZOOS[scale.zoo]
    return Bench(
        models=models,
        sources=[entry.label for entry in entries if not entry.adversarial],
        targets=[entry.label for entry in entries],
        adversarial=[entry.label for entry in entries if entry.adversarial],
        images=images,
        labels=labels,
        correct={label: (predict(model, images) == labels).cpu() for label, model in models.items()},
    )


def hits_on_targets(
    models: dict[str, nn.Module],
    source: str,
    settings: Sequence[AttackSettings],
    targets: Sequence[str],
    images: Tensor,
    labels: Tensor,
    batch_size: int,
) -> Tensor:
    """Per settings (one per seed), which images the examples crafted on ``source`` fool on each target.

    Returns ``[len(settings), len(targets), images]`` booleans (prediction differs from the label).
    """
    from hmcam.evaluation import predict

    per_seed = []
    for setting in settings:
        crafted = adversarial_examples(models[source], setting, images, labels, batch_size)
        per_seed.append(torch.stack([predict(models[target], crafted) != labels for target in targets]))
    return torch.stack(per_seed).cpu()


def cached(path: Path, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """The tensors saved at ``path``, or ``compute()``'s, saved there first (safetensors, written atomically)."""
    if path.exists():
        tensors, _ = load_tensors(path)
        return tensors
    tensors = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, tensors, {"cached": path.stem})
    return tensors


def jobs(items: Sequence[Any], description: str, progress: bool) -> Any:
    """``items`` with a progress bar."""
    return tqdm(items, desc=description, unit="job", disable=not progress)


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def write_outputs(
    options: RunOptions,
    experiment: str,
    scale: AttackScale | Any,
    results: dict[str, Any],
    tables: dict[str, tuple[Sequence[dict[str, Any]], Sequence[str]]],
    report: str,
) -> None:
    """The run folder's files: ``config.json``, ``results.json``, the tables as CSV, ``report.md``, ``report.html``.

    The first table is the experiment's main one and is written as ``results.csv``, the others
    under their own names; ``results.json`` gets the scale and the ``run`` record (versions,
    machine, wall time). The reports are written last, so their presence marks a finished run.
    """
    from hmcam.reporting.page import write_run_page
    from hmcam.reporting.provenance import run_record
    from hmcam.reporting.tables import write_csv

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    settings = asdict(scale) if hasattr(scale, "__dataclass_fields__") else scale
    config = {
        "kind": "experiment",
        "experiment": experiment,
        "scale": settings,
        "device": options.device,
        "data_root": options.data_root,
        "models": str(options.models),
    }
    atomic_write_json(out / "config.json", _json_ready(config))
    run = run_record("experiment", options.started, options.device)
    atomic_write_json(
        out / "results.json", _json_ready({"experiment": experiment, "scale": settings, **results, "run": run})
    )
    for index, (name, (rows, columns)) in enumerate(tables.items()):
        write_csv(out / ("results.csv" if index == 0 else f"{name}.csv"), rows, columns)
    atomic_write(out / "report.md", report.encode())
    write_run_page(out)


def start_run_folder(out: Path, config: dict[str, Any], mismatch: str) -> None:
    """Make ``out`` a run folder of ``config``: refuse a file, or a ``config.json`` saved by other settings.

    A rerun with the same settings finds its own ``config.json`` and continues; ``mismatch`` names
    what another one holds in the error (``"a run of another plan"``), so results of two
    configurations are never mixed. ``config.json`` is written (again) once the folder is accepted.
    """
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder")
    expected = json.loads(json.dumps(config))
    saved_file = out / "config.json"
    if saved_file.exists():
        try:
            saved = json.loads(saved_file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{saved_file} is not valid JSON ({error}); remove it or choose another --out") from None
        if saved != expected:
            raise ValueError(f"{out} holds {mismatch} ({saved_file}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved_file, expected)


def claim_table(claims: Sequence[dict[str, str]]) -> str:
    """The Markdown table of claims: the paper's statement and number, ours, and the verdict."""
    from hmcam.reporting.tables import markdown_table

    return markdown_table(claims, ["claim", "paper", "ours", "verdict"])
