"""The models the attack experiments attack: trained once per scale through the trainer, cached, reloaded.

Section 5.2 of the paper attacks six CIFAR-10 networks, four trained normally and one adversarially
(ResNet32_A). Each scale names its own set (:data:`ZOOS`): at ``smoke`` and ``small``, Fashion-MNIST
networks of three different designs (a CNN, LeNet, an MLP) and an adversarially trained CNN; at
``paper``, the paper's networks. A model is trained by :func:`hmcam.training.train` into
``MODELS_DIR/LABEL`` and reused from there by every experiment that needs it: a finished run is
loaded, a killed one resumed. A zoo trained with another seed lives in ``MODELS_DIR/seed-K``
(:func:`zoo_folder`), so that several zoos of one scale can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from hmcam.core.distributed import resolve_device
from hmcam.core.validate import choose
from hmcam.models import load_checkpoint
from hmcam.training import TrainConfig, train
from hmcam.training.trainer import LAST_FILE


@dataclass(frozen=True)
class ZooModel:
    """One network of a zoo: its label in tables, architecture, training method and configuration fields."""

    label: str
    model: str
    method: str = "natural"
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def adversarial(self) -> bool:
        """Whether the model was trained adversarially (the paper's ``_A`` models)."""
        return self.method != "natural"


_SMOKE_TRAIN = {"epochs": 1, "train_limit": 512, "test_limit": 256, "eval_subset": 0, "lr": 0.05, "collapse_epochs": 0}
_SMALL_TRAIN = {"epochs": 4, "lr": 0.05, "schedule": "cosine", "eval_subset": 200, "test_limit": 2000}
_CIFAR_TRAIN = {
    "epochs": 200,
    "lr": 0.1,
    "milestones": (0.5, 0.75),
    "batch_size": 128,
    "augment": "crop-flip",
    "eval_subset": 500,
}

#: The networks of each scale: three natural designs and one adversarially trained network.
ZOOS: dict[str, tuple[ZooModel, ...]] = {
    "smoke": (
        ZooModel("SmallCNN", "smallcnn", train=_SMOKE_TRAIN),
        ZooModel("LeNet", "lenet", train=_SMOKE_TRAIN),
        ZooModel("MLP", "mlp", train={**_SMOKE_TRAIN, "model_options": {"hidden": [64]}}),
        ZooModel("LeNet_A", "lenet", "pgd", {"eps": 0.1, "alpha": 0.05, "steps": 2}, _SMOKE_TRAIN),
    ),
    # Sized so that three zoos (three seeds) train in minutes on 2 CPU cores; the adversarially trained
    # network is a LeNet (a quarter of SmallCNN's cost per pass) with PGD-5.
    "small": (
        ZooModel("SmallCNN", "smallcnn", train={**_SMALL_TRAIN, "epochs": 2}),
        ZooModel("LeNet", "lenet", train=_SMALL_TRAIN),
        ZooModel("MLP", "mlp", train=_SMALL_TRAIN),
        ZooModel("LeNet_A", "lenet", "pgd", {"eps": 0.1, "alpha": 0.05, "steps": 5}, {**_SMALL_TRAIN, "epochs": 2}),
    ),
    "paper": (
        ZooModel("ResNet32", "resnet32", train=_CIFAR_TRAIN),
        ZooModel("VGG16", "vgg16", train=_CIFAR_TRAIN),
        ZooModel("ResNeXt29", "resnext29_8x64d", train=_CIFAR_TRAIN),
        ZooModel("DenseNet121", "densenet121", train=_CIFAR_TRAIN),
        ZooModel(
            "ResNet32_A",
            "resnet32",
            "pgd",
            {"eps": 8 / 255, "alpha": 2 / 255, "steps": 7},
            {**_CIFAR_TRAIN, "epochs": 105, "lr": 0.05, "milestones": (79, 90, 100), "warmup_epochs": 1.0},
        ),
    ),
}
#: The dataset each zoo is trained on.
ZOO_DATASETS = {"smoke": "fashion-mnist", "small": "fashion-mnist", "paper": "cifar10"}


def zoo_folder(folder: str | Path, seed: int) -> Path:
    """Where the zoo of ``seed`` lives under ``folder``: ``folder`` itself for seed 0, ``folder/seed-K`` otherwise.

    Seed 0 keeps the layout of the zoos trained before zoo seeds existed, so they stay valid.
    """
    return Path(folder) if seed == 0 else Path(folder) / f"seed-{seed}"


def trained_model(
    entry: ZooModel,
    dataset: str,
    folder: str | Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    data_root: str | None = None,
    progress: bool = False,
) -> nn.Module:
    """``entry`` trained on ``dataset`` in ``folder / entry.label`` (or the finished run there), in eval mode."""
    run = Path(folder) / entry.label
    target = resolve_device(device)
    last = run / LAST_FILE
    if last.exists():
        # A finished run is reused on any device: the device is not part of what the model is.
        model, metadata = load_checkpoint(last, device=target)
        training = metadata.get("training") or {}
        if training.get("epoch") == (training.get("config") or {}).get("epochs"):
            return model.eval()
    config = TrainConfig(
        dataset=dataset,
        model=entry.model,
        method=entry.method,
        method_kwargs=dict(entry.method_kwargs),
        seed=seed,
        device=device,
        data_root=data_root,
        progress=progress,
        out=str(run),
        **entry.train,
    )
    summary = train(config, resume=True)
    model, _ = load_checkpoint(summary["files"][LAST_FILE], device=target)
    return model.eval()


def trained_zoo(
    scale: str,
    folder: str | Path,
    *,
    labels: tuple[str, ...] | None = None,
    seed: int = 0,
    device: str = "cpu",
    data_root: str | None = None,
    progress: bool = False,
) -> dict[str, nn.Module]:
    """Every model of the scale's zoo (or those in ``labels``) trained with ``seed``, or reloaded from its folder."""
    entries = [entry for entry in choose("scale", scale, ZOOS) if labels is None or entry.label in labels]
    where = zoo_folder(folder, seed)
    return {
        entry.label: trained_model(
            entry, ZOO_DATASETS[scale], where, seed=seed, device=device, data_root=data_root, progress=progress
        )
        for entry in entries
    }
