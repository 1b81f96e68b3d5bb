"""One trainer for every training method: data order, SGD, schedule, evaluation, checkpoints, resume.

A run folder ``RUN_DIR = config.out`` receives, every epoch (from rank 0 only), in this order:

- ``config.json``       the configuration and what it resolved to (method settings, threat model),
  written once when the run starts;
- ``last.safetensors``  the model after the epoch, and ``best.safetensors`` the best one so far (by
  robust accuracy for adversarial methods, clean accuracy otherwise), both through
  :func:`hmcam.models.save_checkpoint` with the configuration and metrics in their metadata;
- ``metrics.jsonl``     one JSON line per epoch: epoch, step, lr, train loss and accuracy, clean and
  robust test accuracy, ``passes`` (full forward+backward passes over minibatches this epoch, of
  ``batches`` global minibatches: ``passes / batches`` per training example) and ``passes_total``,
  ``train_seconds`` (training alone) and ``seconds`` (with evaluation), and
  ``collapse`` when training accuracy has sat at chance;
- ``curves.png``        loss and accuracies per epoch;
- ``results.json``, ``results.csv``, ``report.md``, ``report.html`` once the last epoch is done: the
  run summary with its ``run`` record, the per-epoch table and the report
  (:mod:`hmcam.training.report`);
- ``state.safetensors`` the trainer state: weights, optimizer tensors, every process's RNG states and
  method state, the method's shared state and per-example store (once), the epoch, step, history
  and best result (JSON metadata, no pickle). It is written last, so it is the commit point:
  resuming restarts after the last epoch it holds and rewrites ``metrics.jsonl`` and
  ``curves.png`` from its history, whatever a kill left of them.

Exact resume: the data order of epoch ``e`` is a permutation drawn from a generator seeded with
``seed + e`` (DistributedSampler), augmentation a function of ``(seed, e, batch)``, the learning
rate a pure function of progress, evaluation never touches the training RNGs, and the state
restores weights, momentum, RNG streams and method state bit for bit, so a run killed at any moment
and resumed ends with the same weights as an uninterrupted one.

Multi-process: each of ``world_size`` processes takes every ``world_size``-th index of the epoch's
permutation and batches of ``batch_size // world_size``, so global batch ``j`` holds the same
examples as batch ``j`` of a single-process run; DistributedDataParallel averages gradients over it
and, with ``sync_batchnorm``, batch norm uses the global batch's statistics, so K processes follow
one process's trajectory up to rounding. The last incomplete global batch is dropped in both cases.

Failures: a loss that is not finite stops the run at that minibatch with a FloatingPointError,
before anything of the epoch is written, so the last good checkpoint and state stay as they were.
Training accuracy at chance for ``collapse_epochs`` epochs in a row is reported (a
:class:`TrainingCollapseWarning` and a ``collapse`` note in the metrics), or stops the run with
:class:`TrainingCollapsed` after saving the epoch when ``stop_on_collapse`` is set.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.utils.data import BatchSampler, DistributedSampler
from tqdm.auto import tqdm

from hmcam.core.batching import in_memory, iterate_batches
from hmcam.core.distributed import (
    DistributedContext,
    all_reduce_sum,
    any_process,
    barrier,
    convert_batchnorm,
    gather_bytes,
    setup_distributed,
    teardown_distributed,
    unwrap_model,
    wrap_model,
)
from hmcam.core.storage import atomic_write, atomic_write_json, load_tensors, save_tensors
from hmcam.data import ImageDataset, ImageFolder, load_dataset
from hmcam.data.registry import SOURCES
from hmcam.evaluation.accuracy import accuracies
from hmcam.models import build_model, save_checkpoint
from hmcam.training.augment import Augmentation
from hmcam.training.config import RESUMABLE_CHANGES, TrainConfig
from hmcam.training.curves import save_curves
from hmcam.training.examples import ExampleState
from hmcam.training.methods import Batch, MethodSetup, StepContext, StepMeter, TrainingMethod, build_method
from hmcam.training.report import write_training_report
from hmcam.training.schedules import Schedule, resolve_milestones
from hmcam.training.state import (
    capture_rng,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    pack,
    restore_rng,
    seed_everything,
    unpack,
)
from hmcam.training.threat import default_threat

STATE_FORMAT = "hmcam-trainer-state"
STATE_VERSION = 1
MODEL_PREFIX = "model."
METHOD_PREFIX = "method."
SHARED_PREFIX = "shared."
EXAMPLES_PREFIX = "examples."
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.safetensors"
CURVES_FILE = "curves.png"
#: The metadata of a trainer state and the JSON types each key must have.
STATE_KEYS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "config": dict,
    "epoch": int,
    "step": int,
    "world_size": int,
    "optimizer": dict,
    "ranks": list,
    "history": list,
    "best": (dict, type(None)),
}
RNG_TENSORS = ("rng.torch", "rng.numpy", "rng.python")


class TrainingCollapseWarning(UserWarning):
    """Training accuracy has stayed at chance for ``collapse_epochs`` epochs: the run is learning nothing."""


class TrainingCollapsed(RuntimeError):
    """Raised instead of :class:`TrainingCollapseWarning` under ``stop_on_collapse``, once the epoch is saved."""


def process_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s random streams during training, derived from (seed, rank).

    Processes draw different random starts; the model is initialized from ``seed`` itself before
    this, identically on every process.
    """
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def evaluation_split(dataset: str) -> str:
    """The split that per-epoch evaluation reads: ``"test"``, or ``"val"`` where there is no test split."""
    return "test" if "test" in SOURCES[dataset.lower()].splits else "val"


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Ask torch for deterministic kernels while training (when ``enabled``), then restore the flags."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    if enabled:
        # cuBLAS needs a fixed workspace for reproducible results; it must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[1], previous[2]


def chance_streak(history: list[dict[str, Any]], threshold: float) -> int:
    """How many of the last epochs of ``history`` in a row had a training accuracy of at most ``threshold``."""
    streak = 0
    for record in reversed(history):
        if record["train_accuracy"] > threshold:
            break
        streak += 1
    return streak


class Trainer:
    """Trains ``config.model`` on ``config.dataset`` with ``config.method``; see the module docstring.

    Construction loads the data, builds the model (batch norm synchronized across processes when
    ``sync_batchnorm``), sets the method up with its per-example store, and builds the optimizer
    from the method's parameter groups; :meth:`fit` runs (or resumes) the epochs and returns the run
    summary.
    """

    def __init__(self, config: TrainConfig, context: DistributedContext) -> None:
        if config.batch_size % context.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} must be divisible by the {context.world_size} processes "
                f"(each takes batch_size // world_size examples per step)"
            )
        self.config = config
        self.context = context
        self.device = context.device
        self.run_dir = Path(config.out)
        self.train_set, self.test_set = self._load_data()
        self.info = self.train_set.info

        seed_everything(config.seed)
        net = build_model(
            config.model,
            num_classes=self.info.num_classes,
            in_channels=self.info.input_shape[0],
            mean=self.info.mean,
            std=self.info.std,
            **config.model_options,
        ).to(self.device)
        if config.channels_last:
            # Module.to takes memory_format at run time; torch's overloads for it leave the keyword out.
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.net = convert_batchnorm(net, context) if config.sync_batchnorm else net
        self.method: TrainingMethod = build_method(config.method, dataset=self.info.name, **config.method_kwargs)
        seed_everything(process_seed(config.seed, context.rank))
        self.sampler: DistributedSampler[int] = DistributedSampler(
            self.train_set,
            num_replicas=context.world_size,
            rank=context.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
        )
        self.process_batch = config.batch_size // context.world_size
        self.batches_per_epoch = len(self.sampler) // self.process_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the training split has {len(self.train_set)} examples, fewer than one batch of {config.batch_size}"
            )
        self.examples = ExampleState(len(self.train_set), context)
        self.method.setup(
            MethodSetup(
                dataset_size=len(self.train_set),
                input_shape=tuple(self.info.input_shape),
                num_classes=self.info.num_classes,
                device=self.device,
                distributed=context,
                model=self.net,
                examples=self.examples,
                batch_size=config.batch_size,
                process_batch=self.process_batch,
                batches_per_epoch=self.batches_per_epoch,
                epochs=config.epochs,
                seed=config.seed,
            )
        )
        self.model = wrap_model(self.net, context)
        self.optimizer = torch.optim.SGD(
            self.method.parameter_groups(self.net),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.optimizer.register_step_pre_hook(self._before_optimizer_step)
        self.optimizer.register_step_post_hook(self._after_optimizer_step)
        self.schedule = Schedule(
            config.schedule,
            config.lr,
            config.epochs,
            resolve_milestones(config.milestones, config.epochs),
            config.gamma,
            config.cyclic_peak,
            config.warmup_epochs,
        )
        self.augmentation = Augmentation(config.augment, config.augment_padding, config.seed)
        self.eval_eps, self.eval_alpha = self._evaluation_threat()
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        # Where the current minibatch is, for the optimizer hooks that set the learning rate.
        self._batch = 0
        self._steps_in_batch = 0
        self._lr = config.lr

    # --------------------------------------------------------------------------------- set-up
    def _load_data(self) -> tuple[ImageDataset | ImageFolder, ImageDataset | ImageFolder]:
        config = self.config

        def load() -> tuple[ImageDataset | ImageFolder, ImageDataset | ImageFolder]:
            train = load_dataset(
                config.dataset, "train", root=config.data_root, download=config.download, limit=config.train_limit
            )
            test = load_dataset(
                config.dataset,
                evaluation_split(config.dataset),
                root=config.data_root,
                download=config.download,
                limit=config.test_limit,
            )
            return train, test

        # Rank 0 alone may download; the others read the files once they are complete.
        if self.context.is_main:
            data = load()
        barrier(self.context)
        if not self.context.is_main:
            data = load()
        return data

    def _evaluation_threat(self) -> tuple[float | None, float | None]:
        if self.config.eval_subset == 0:
            return None, None
        eps = self.config.eval_eps
        if eps is None:
            eps = self.method.eps
        if eps is None:
            threat = default_threat(self.info.name)
            if threat is None:
                raise ValueError(
                    f"dataset {self.info.name!r} has no default threat model: set eval_eps, or eval_subset=0 "
                    "to skip robust evaluation"
                )
            eps = threat.eps
        return eps, self.config.eval_alpha

    # ---------------------------------------------------------------------------------- files
    def path(self, name: str) -> Path:
        """The path of file ``name`` in the run folder."""
        return self.run_dir / name

    def resolved(self) -> dict[str, Any]:
        """The configuration with what it resolved to, as written to ``config.json``."""
        return {
            "config": self.config.to_dict(),
            "method": {"name": self.method.name, **self.method.hyperparameters()},
            "dataset": {
                "name": self.info.name,
                "input_shape": list(self.info.input_shape),
                "num_classes": self.info.num_classes,
                "train_examples": len(self.train_set),
                "test_examples": len(self.test_set),
            },
            "evaluation": {
                "eps": self.eval_eps,
                "alpha": self.eval_alpha,
                "steps": self.config.eval_steps,
                "examples": min(self.config.eval_subset, len(self.test_set)),
            },
            "world_size": self.context.world_size,
            "process_batch": self.process_batch,
            "steps_per_epoch": self.batches_per_epoch * self.method.replays,
            "passes_per_batch": self.method.passes_per_batch(),
            "torch": torch.__version__,
        }

    def _save_model(self, name: str, record: dict[str, Any]) -> None:
        save_checkpoint(
            self.path(name),
            self.net,
            architecture=self.config.model,
            dataset=self.info.name,
            input_shape=list(self.info.input_shape),
            num_classes=self.info.num_classes,
            mean=list(self.info.mean),
            std=list(self.info.std),
            options=self.config.model_options,
            training={**self.resolved(), "epoch": record["epoch"]},
            metrics=record,
        )

    def _gather_process_state(self) -> list[bytes]:
        # Every process contributes its RNG and method state; they travel to rank 0 alone, over gloo.
        rng_tensors, rng_meta = capture_rng()
        method_tensors = {METHOD_PREFIX + k: v for k, v in self.method.state_dict().items()}
        return gather_bytes(pack({**rng_tensors, **method_tensors}, {"rng": rng_meta}), self.context)

    def _write_state(self, payloads: list[bytes]) -> None:
        tensors = {MODEL_PREFIX + k: v for k, v in self.net.state_dict().items()}
        optimizer_tensors, optimizer_meta = optimizer_state_to_tensors(self.optimizer.state_dict())
        tensors.update(optimizer_tensors)
        ranks = []
        for rank, payload in enumerate(payloads):
            rank_tensors, rank_meta = unpack(payload)
            tensors.update({f"rank{rank}.{k}": v for k, v in rank_tensors.items()})
            ranks.append(rank_meta)
        # Identical on every process, so written once, from this process's copy.
        tensors.update({SHARED_PREFIX + k: v for k, v in self.method.shared_state_dict().items()})
        tensors.update({EXAMPLES_PREFIX + k: v for k, v in self.examples.state_dict().items()})
        metadata = {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "world_size": self.context.world_size,
            "schedule": {"kind": self.config.schedule, "progress_epochs": self.epoch, "step": self.step},
            "optimizer": optimizer_meta,
            "ranks": ranks,
            "history": self.history,
            "best": self.best,
        }
        save_tensors(self.path(STATE_FILE), tensors, metadata)

    def _check_state(self, path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Raise ValueError naming ``path`` unless ``meta`` and ``tensors`` have the shape of a trainer state."""

        def damaged(what: str) -> ValueError:
            return ValueError(f"{path} is damaged or not an hmcam trainer state: {what}")

        if meta.get("format") != STATE_FORMAT or meta.get("format_version") != STATE_VERSION:
            raise ValueError(f"{path} is not an hmcam trainer state (format {meta.get('format')!r})")
        for key, kind in STATE_KEYS.items():
            if key not in meta:
                raise damaged(f"its metadata lacks {key!r}")
            if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
                raise damaged(f"metadata {key!r} has the wrong type ({type(meta[key]).__name__})")
        if meta["epoch"] < 0 or meta["step"] < 0 or meta["world_size"] < 1:
            raise damaged(f"epoch {meta['epoch']}, step {meta['step']}, world size {meta['world_size']}")
        if len(meta["history"]) != meta["epoch"] or not all(isinstance(r, dict) for r in meta["history"]):
            raise damaged(f"its history does not hold one record per epoch ({meta['epoch']} epochs)")
        if any(not isinstance(r.get("train_accuracy"), (int, float)) for r in meta["history"]):
            raise damaged("a history record lacks train_accuracy")
        best = meta["best"]
        if best is not None and not (isinstance(best.get("value"), (int, float)) and "epoch" in best):
            raise damaged(f"its best result {best!r} lacks an epoch or a value")
        if any(key not in meta["optimizer"] for key in ("param_groups", "indices", "scalars")):
            raise damaged("its optimizer metadata is incomplete")
        if len(meta["ranks"]) != meta["world_size"] or not all(
            isinstance(r, dict) and isinstance(r.get("rng"), dict) for r in meta["ranks"]
        ):
            raise damaged(f"it does not hold the RNG state of {meta['world_size']} processes")
        expected = self.net.state_dict()
        found = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
        if set(found) != set(expected):
            missing, unknown = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
            raise damaged(f"its model tensors differ from {self.config.model}'s (missing {missing}, unknown {unknown})")
        wrong = [k for k, v in found.items() if v.shape != expected[k].shape]
        if wrong:
            raise damaged(f"model tensors {wrong} have the wrong shape")
        for rank in range(meta["world_size"]):
            absent = [name for name in RNG_TENSORS if f"rank{rank}.{name}" not in tensors]
            if absent:
                raise damaged(f"process {rank}'s RNG tensors {absent} are missing")
        stored = sorted(k[len(EXAMPLES_PREFIX) :] for k in tensors if k.startswith(EXAMPLES_PREFIX))
        if stored != sorted(self.examples.names):
            raise damaged(f"it holds per-example state {stored}, the method registers {sorted(self.examples.names)}")

    def _load_state(self) -> None:
        path = self.path(STATE_FILE)
        tensors, meta = load_tensors(path, device="cpu")
        self._check_state(path, tensors, meta)
        # A field added since the state was written is compared as its default, which is what ran.
        saved, current = {**TrainConfig().to_dict(), **meta["config"]}, self.config.to_dict()
        changed = sorted(k for k in current if saved.get(k) != current[k] and k not in RESUMABLE_CHANGES)
        if changed:
            raise ValueError(
                f"cannot resume {self.run_dir}: the configuration differs in {changed} "
                f"(saved {[saved.get(k) for k in changed]}, now {[current[k] for k in changed]})"
            )
        if meta["world_size"] != self.context.world_size:
            raise ValueError(
                f"{path} was written by {meta['world_size']} processes; resume it with the same number, "
                f"not {self.context.world_size}"
            )
        try:
            model_state = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
            self.net.load_state_dict(model_state, strict=True)
            self.optimizer.load_state_dict(optimizer_state_from_tensors(tensors, meta["optimizer"]))
            prefix = f"rank{self.context.rank}."
            mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            restore_rng(mine, meta["ranks"][self.context.rank]["rng"])
            self.method.load_state_dict(
                {k[len(METHOD_PREFIX) :]: v for k, v in mine.items() if k.startswith(METHOD_PREFIX)}
            )
            self.method.load_shared_state_dict(
                {k[len(SHARED_PREFIX) :]: v for k, v in tensors.items() if k.startswith(SHARED_PREFIX)}
            )
            self.examples.load_state_dict(
                {k[len(EXAMPLES_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EXAMPLES_PREFIX)}
            )
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            problem = f"{type(error).__name__}: {error}"
            raise ValueError(f"{path} is damaged or does not match this run: {problem}") from error
        self.epoch, self.step = meta["epoch"], meta["step"]
        self.history, self.best = meta["history"], meta["best"]

    def _write_history_files(self) -> None:
        # The whole history is rewritten atomically, so a kill can neither truncate the file nor
        # leave it disagreeing with the state once a resumed run has rewritten it.
        lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in self.history)
        atomic_write(self.path(METRICS_FILE), lines.encode())
        if self.history:
            save_curves(
                self.path(CURVES_FILE),
                self.history,
                f"{self.config.model} on {self.info.name}, {self.method.name} training",
            )

    # ------------------------------------------------------------------------------- training
    def learning_rate(self, epoch: int, batch: int, step: int = 0) -> float:
        """The scheduled rate of optimizer step ``step`` of minibatch ``batch`` in ``epoch`` (see the methods' docs)."""
        steps = self.batches_per_epoch * self.method.replays
        return self.schedule(epoch + (batch * self.method.replays + step + 0.5) / steps)

    def _before_optimizer_step(self, optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._steps_in_batch >= self.method.replays:
            raise RuntimeError(
                f"training method {self.method.name!r} took more than its replays = {self.method.replays} "
                f"optimizer steps on one minibatch; set replays to the steps it takes, so the schedule counts them"
            )
        self._lr = self.learning_rate(self.epoch, self._batch, self._steps_in_batch)
        for group in optimizer.param_groups:
            group["lr"] = self._lr * group.get("lr_scale", 1.0)

    def _after_optimizer_step(self, optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._steps_in_batch += 1
        self.step += 1

    def _epoch_batches(self) -> list[list[int]]:
        self.sampler.set_epoch(self.epoch)
        return list(BatchSampler(self.sampler, self.process_batch, drop_last=True))

    def _stop_for_nonfinite(self, meter: StepMeter, batch: int) -> None:
        loss = meter.loss
        bad = loss is not None and not bool(torch.isfinite(loss).item())
        # Every process stops at the same minibatch, whichever saw the bad loss.
        if not any_process(bad, self.context):
            return
        value = f"{loss.item() / meter.examples}" if loss is not None and bad else "non-finite on another process"
        kept = (
            f"the last good checkpoint and state (epoch {self.epoch}) in {self.run_dir} were kept"
            if self.epoch
            else "no epoch had been completed, so nothing was saved"
        )
        raise FloatingPointError(
            f"the training loss became {value} in epoch {self.epoch + 1}, minibatch {batch + 1} of "
            f"{self.batches_per_epoch} (optimizer step {self.step}); training stopped there and {kept}. "
            "Lower the learning rate or warm it up (warmup_epochs)"
        )

    def _train_epoch(self) -> dict[str, Any]:
        self.method.on_epoch_start(self.epoch)
        batches = self._epoch_batches()
        self.model.train()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # examples, loss sum, correct
        stat_totals: dict[str, Tensor] = {}
        passes = 0.0
        show = self.context.is_main and self.config.progress
        reader = iterate_batches(
            self.train_set,
            batches,
            workers=self.config.workers,
            pin_memory=self.device.type == "cuda",
            seed=process_seed(self.config.seed + self.epoch, self.context.rank),
        )
        bar = tqdm(
            zip(batches, reader, strict=True),
            total=len(batches),
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            unit="batch",
            disable=not show,
        )
        for b, (indices, (images, labels)) in enumerate(bar):
            index = torch.tensor(indices, dtype=torch.int64)
            images = images.to(self.device, non_blocking=True)
            images = self.augmentation(images, self.epoch, b, self.context.rank, self.context.world_size)
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(self.device, non_blocking=True)
            self._batch, self._steps_in_batch = b, 0
            meter = StepMeter()
            context = StepContext(
                epoch=self.epoch,
                step=self.step,
                indices=index,
                batch=b,
                batches=self.batches_per_epoch,
                examples=self.examples,
                meter=meter,
                schedule=functools.partial(self.learning_rate, self.epoch, b),
            )
            self.method.train_step(self.model, self.optimizer, Batch(images, labels, index), context)
            self.examples.sync()
            if meter.loss is None or meter.correct is None:
                raise RuntimeError(
                    f"training method {self.method.name!r} reported no output for minibatch {b + 1}: "
                    "its train_step must call context.record(output, labels)"
                )
            self._stop_for_nonfinite(meter, b)
            totals += torch.stack([totals.new_tensor(meter.examples), meter.loss, meter.correct])
            for name, value in meter.stats.items():
                stat_totals[name] = stat_totals[name] + value if name in stat_totals else value
            passes += meter.passes
            if show:
                bar.set_postfix(loss=f"{meter.loss.item() / meter.examples:.4f}", lr=f"{self._lr:.4g}")
        names = sorted(stat_totals)
        local = torch.cat([totals, totals.new_tensor([passes]), *(stat_totals[n].reshape(1) for n in names)])
        summed = all_reduce_sum(local, self.context).tolist()
        examples = summed[0]
        record: dict[str, Any] = {
            "train_loss": summed[1] / examples,
            "train_accuracy": summed[2] / examples,
            "lr": self._lr,
            # Every process makes the same passes over its share of each global minibatch.
            "passes": summed[3] / self.context.world_size,
            "batches": self.batches_per_epoch,
        }
        record.update({f"train_{name}": value / examples for name, value in zip(names, summed[4:], strict=True)})
        record.update(self.method.on_epoch_end(self.epoch))
        return record

    def _collapse(self, record: dict[str, Any]) -> str | None:
        """The collapse message when training accuracy has sat at chance for ``collapse_epochs`` epochs, else None."""
        epochs = self.config.collapse_epochs
        if epochs == 0:
            return None
        threshold = 1.0 / self.info.num_classes + self.config.collapse_margin
        streak = chance_streak([*self.history, record], threshold)
        if streak < epochs:
            return None
        return (
            f"training accuracy has stayed at chance (<= {threshold:.3f} for {self.info.num_classes} classes) "
            f"for {streak} epochs in a row, up to epoch {record['epoch']}: the run is not learning. Lower the "
            "learning rate or warm it up (warmup_epochs); collapse_epochs=0 turns this check off"
        )

    def _finish_epoch(self, record: dict[str, Any]) -> None:
        adversarial = self.method.adversarial and record["robust_accuracy"] is not None
        metric = "robust_accuracy" if adversarial else "clean_accuracy"
        improved = self.best is None or record[metric] > self.best["value"]
        if improved:
            self.best = {"epoch": record["epoch"], "metric": metric, "value": record[metric]}
        self.history.append(record)
        # Captured before any file is written, and gathered from every process, as a resume needs.
        payloads = self._gather_process_state()
        if self.context.is_main:
            self._save_model(LAST_FILE, record)
            if improved:
                self._save_model(BEST_FILE, record)
            self._write_history_files()
            self._write_state(payloads)
        # Until rank 0 has committed the epoch no process may leave (stop_on_collapse raises right
        # after this): torchrun tears every process down when one exits, which would cut the write.
        barrier(self.context)

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Run the remaining epochs (all of them unless ``resume`` finds a saved state) and return the summary.

        Without ``resume`` a folder that already holds a trainer state is an error rather than
        being overwritten. With ``resume`` and no state (killed before the first epoch ended), training
        starts from scratch. A resumed run first rewrites ``metrics.jsonl`` and ``curves.png`` from
        the state's history.
        """
        state_exists = self.path(STATE_FILE).is_file()
        if state_exists and not resume:
            raise FileExistsError(
                f"{self.run_dir} already holds a training run ({STATE_FILE}); pass resume=True to continue it "
                "or choose another output folder"
            )
        if state_exists:
            self._load_state()
        resumed_from = self.epoch if state_exists else None
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path(CONFIG_FILE), self.resolved())
            if state_exists:
                self._write_history_files()
        started = time.perf_counter()
        wall_started = time.time()
        while self.epoch < self.config.epochs:
            began = time.perf_counter()
            record: dict[str, Any] = {"epoch": self.epoch + 1}
            record.update(self._train_epoch())
            trained = time.perf_counter()
            record["clean_accuracy"], record["robust_accuracy"] = accuracies(
                unwrap_model(self.model),
                self.test_set,
                robust_examples=self.config.eval_subset,
                eps=self.eval_eps,
                alpha=self.eval_alpha,
                steps=self.config.eval_steps,
                seed=self.config.seed,
                batch_size=self.config.batch_size,
                context=self.context,
                workers=0 if in_memory(self.test_set) else self.config.workers,
            )
            record["step"] = self.step
            previous = self.history[-1].get("passes_total", 0.0) if self.history else 0.0
            record["passes_total"] = previous + record["passes"]
            record["train_seconds"] = trained - began
            record["seconds"] = time.perf_counter() - began
            collapse = self._collapse(record)
            if collapse is not None:
                record["collapse"] = collapse
                if self.context.is_main and not self.config.stop_on_collapse:
                    warnings.warn(collapse, TrainingCollapseWarning, stacklevel=2)
            self.epoch += 1
            self._finish_epoch(record)
            if collapse is not None and self.config.stop_on_collapse:
                raise TrainingCollapsed(f"{collapse}. Stopped after saving epoch {record['epoch']} (stop_on_collapse)")
        summary = {
            "run_dir": str(self.run_dir),
            "epochs": self.epoch,
            "steps": self.step,
            "resumed_from_epoch": resumed_from,
            "seconds": time.perf_counter() - started,
            "final": self.history[-1],
            "best": self.best,
            "method": {"name": self.method.name, **self.method.hyperparameters()},
            "world_size": self.context.world_size,
            "files": {
                name: str(self.path(name))
                for name in (CONFIG_FILE, METRICS_FILE, LAST_FILE, BEST_FILE, STATE_FILE, CURVES_FILE)
            },
        }
        if self.context.is_main:
            write_training_report(self.run_dir, summary, self.history, self.resolved(), wall_started)
        return summary


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) the run described by ``config``; returns the run summary.

    Under ``torchrun`` every process calls this; the process group is set up and torn down here
    unless the caller created it. The summary holds the run folder, epochs and steps done, the final
    and best metrics, the method's settings and the paths of the files written.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train() takes a TrainConfig, got {type(config).__name__}")
    context = setup_distributed(config.device)
    try:
        with deterministic_algorithms(config.deterministic):
            return Trainer(config, context).fit(resume)
    finally:
        teardown_distributed(context)
