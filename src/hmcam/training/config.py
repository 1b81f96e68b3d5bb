"""The configuration of one training run, validated on construction and round-tripped through JSON.

Defaults follow the paper's adversarial-training setup (section 5.1): SGD with momentum 0.9 and
weight decay 5e-4, a step schedule decaying by 10x. Milestones may be fractions of the run (0.5 =
halfway) or whole epochs (the paper's 79, 90, 100). Datasets' default threat models live in
:mod:`hmcam.training.threat`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hmcam.core.validate import check_flag, check_int, check_number, check_string_keys, check_text
from hmcam.training.augment import AUGMENTATIONS
from hmcam.training.schedules import SCHEDULES, resolve_milestones


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, method, optimization, evaluation and where to write.

    - ``dataset``/``model``: names in :data:`hmcam.data.DATASETS` and :data:`hmcam.models.MODELS`;
      ``model_options`` are the architecture's own options (e.g. ``{"dropout": 0.0}`` for smallcnn).
    - ``method`` and ``method_kwargs``: a name in :data:`hmcam.training.METHODS` and its arguments
      (e.g. ``{"eps": 0.1, "steps": 10}`` for ``"pgd"``).
    - ``batch_size`` is the global batch; with several processes each takes ``batch_size // world_size``.
      An incomplete last batch is dropped so that every step sees a full batch.
    - ``schedule``: ``"multistep"`` (``milestones``, ``gamma``), ``"cosine"`` or ``"cyclic"`` (peak at
      fraction ``cyclic_peak`` of training); see :mod:`hmcam.training.schedules`. ``warmup_epochs``
      (default 0: none) scales the rate linearly from about 0 up to the schedule's over that many
      epochs (fractions allowed), against adversarial training stuck at chance from a too large
      initial rate.
    - ``augment``: ``"none"`` or ``"crop-flip"`` (random crop after zero-padding by
      ``augment_padding`` pixels, and a horizontal flip with probability 1/2: the CIFAR standard),
      drawn from ``(seed, epoch, batch)`` so it is the same for any number of processes and after
      a resume; see :mod:`hmcam.training.augment`.
    - ``sync_batchnorm`` (default on): under ``torchrun``, batch-norm layers compute their
      statistics over the global batch, so K processes train as one process would; off, each
      process normalizes with its own share of the batch.
    - ``workers``: worker processes that decode and prefetch batches of folder datasets
      (ImageNet); in-memory datasets (MNIST, CIFAR) are indexed directly and ignore it.
    - ``collapse_epochs``: training accuracy at most ``1 / classes + collapse_margin`` for that many
      consecutive epochs is reported as a collapse, with a warning and a ``collapse`` note in the
      epoch's metrics, or, with ``stop_on_collapse``, ends the run with :class:`~hmcam.training.TrainingCollapsed`
      after the epoch is saved; 0 turns the check off.
    - ``seed`` fixes the initialization, the data order (a function of ``seed`` and the epoch) and
      every random draw; ``deterministic`` also asks torch for deterministic kernels.
    - ``train_limit``/``test_limit`` read only the first examples of each split; robust accuracy is
      measured every epoch on the first ``eval_subset`` test examples with ``eval_steps`` PGD steps of
      size ``eval_alpha`` in an L-inf ball of ``eval_eps`` (defaults: the method's eps, else the
      dataset's; ``alpha = 2.5 * eps / steps``). ``eval_subset = 0`` skips robust evaluation.
    - ``out`` is the run folder; ``device`` is ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    - ``channels_last`` stores convolution weights and inputs in NHWC order, measured 15-30% faster
      for smallcnn training on the CPU (``benchmarks/training.py``); it does not change the model.
    - ``tensorboard`` also writes each epoch's metrics as TensorBoard scalars into ``out/tensorboard``
      (the optional extra ``tensorboard``; :mod:`hmcam.training.tensorboard`).
    """

    dataset: str = "fashion-mnist"
    model: str = "smallcnn"
    model_options: dict[str, Any] = field(default_factory=dict)
    method: str = "natural"
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    cyclic_peak: float = 0.4
    seed: int = 0
    deterministic: bool = False
    data_root: str | None = None
    download: bool = True
    train_limit: int | None = None
    test_limit: int | None = None
    eval_subset: int = 1000
    eval_steps: int = 10
    eval_eps: float | None = None
    eval_alpha: float | None = None
    out: str = "runs/train"
    device: str = "auto"
    channels_last: bool = True
    progress: bool = True
    warmup_epochs: float = 0.0
    augment: str = "none"
    augment_padding: int = 4
    sync_batchnorm: bool = True
    workers: int = 4
    collapse_epochs: int = 3
    collapse_margin: float = 0.02
    stop_on_collapse: bool = False
    tensorboard: bool = False

    def __post_init__(self) -> None:
        for name in ("dataset", "model", "method", "out", "device"):
            check_text(name, getattr(self, name))
        check_text("data_root", self.data_root, optional=True)
        check_string_keys("model_options", self.model_options)
        check_string_keys("method_kwargs", self.method_kwargs)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_number("lr", self.lr, 0.0, open_low=True)
        check_number("momentum", self.momentum, 0.0, 1.0, open_high=True)
        check_number("weight_decay", self.weight_decay, 0.0)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        milestones: object = self.milestones  # checked here, whatever the annotation promises
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, (list, tuple)):
            raise TypeError(f"milestones must be a list of numbers, got {milestones!r}")
        object.__setattr__(self, "milestones", tuple(milestones))
        resolve_milestones(self.milestones, self.epochs)
        check_number("gamma", self.gamma, 0.0, 1.0, open_low=True)
        check_number("cyclic_peak", self.cyclic_peak, 0.0, 1.0, open_low=True, open_high=True)
        check_int("seed", self.seed, 0)
        for name in ("deterministic", "download", "channels_last", "progress", "sync_batchnorm", "stop_on_collapse"):
            check_flag(name, getattr(self, name))
        check_flag("tensorboard", self.tensorboard)
        check_number("warmup_epochs", self.warmup_epochs, 0.0, self.epochs)
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augment!r}; choose one of {AUGMENTATIONS}")
        check_int("augment_padding", self.augment_padding, 0)
        check_int("workers", self.workers, 0)
        check_int("collapse_epochs", self.collapse_epochs, 0)
        check_number("collapse_margin", self.collapse_margin, 0.0, 1.0)
        check_int("train_limit", self.train_limit, 1, optional=True)
        check_int("test_limit", self.test_limit, 1, optional=True)
        check_int("eval_subset", self.eval_subset, 0)
        check_int("eval_steps", self.eval_steps, 1)
        check_number("eval_eps", self.eval_eps, 0.0, open_low=True, optional=True)
        check_number("eval_alpha", self.eval_alpha, 0.0, open_low=True, optional=True)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-serializable values (milestones as a list)."""
        values = dataclasses.asdict(self)
        values["milestones"] = list(self.milestones)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a configuration from a dict such as :meth:`to_dict` returns; unknown keys raise ValueError."""
        if not isinstance(values, dict):
            raise TypeError(f"a training configuration must be a dict, got {type(values).__name__}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown training configuration field(s) {unknown}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


#: Fields that may differ when a run is resumed: they change neither the data nor the arithmetic
#: (``workers`` only how folder images are decoded, the collapse fields only what is reported).
RESUMABLE_CHANGES = frozenset(
    {
        "progress",
        "data_root",
        "download",
        "out",
        "workers",
        "collapse_epochs",
        "collapse_margin",
        "stop_on_collapse",
        "tensorboard",
    }
)
