"""One trainer for every training method: data order, SGD, schedule, evaluation, checkpoints, resume.

A run folder ``RUN_DIR = config.out`` receives, every epoch (from rank 0 only):

- ``config.json``       the configuration and what it resolved to (method settings, threat model);
- ``metrics.jsonl``     one JSON line per epoch: epoch, step, lr, train loss and accuracy, clean and
  robust test accuracy, seconds (``train_seconds`` without the evaluation);
- ``last.safetensors``  the model after the epoch, and ``best.safetensors`` the best one so far (by
  robust accuracy for adversarial methods, clean accuracy otherwise), both through
  :func:`hmcam.models.save_checkpoint` with the configuration and metrics in their metadata;
- ``state.safetensors`` the trainer state: weights, optimizer tensors, every process's RNG states and
  method state, the epoch, step, history and best result (JSON metadata, no pickle). It is written
  after the checkpoints, so it is the commit point: resuming restarts after the last epoch it holds;
- ``curves.png``        loss and accuracies per epoch.

Exact resume: the data order of epoch ``e`` is a permutation drawn from a generator seeded with
``seed + e`` (DistributedSampler), the learning rate a pure function of progress, evaluation never
touches the training RNGs, and the state restores weights, momentum and RNG streams bit for bit, so
a run killed at any moment and resumed ends with the same weights as an uninterrupted one.

Multi-process: each of ``world_size`` processes takes every ``world_size``-th index of the epoch's
permutation and batches of ``batch_size // world_size``, so global batch ``j`` holds the same
examples as batch ``j`` of a single-process run, and DistributedDataParallel averages gradients
over it; the last incomplete global batch is dropped in both cases.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DistributedSampler
from tqdm.auto import tqdm

from hmcam.data import ImageDataset, ImageFolder, load_dataset
from hmcam.data.registry import SOURCES
from hmcam.models import build_model, save_checkpoint
from hmcam.storage import atomic_write, atomic_write_json, load_tensors, save_tensors
from hmcam.training.config import RESUMABLE_CHANGES, TrainConfig
from hmcam.training.curves import save_curves
from hmcam.training.distributed import (
    DistributedContext,
    all_gather_bytes,
    all_reduce_sum,
    barrier,
    setup_distributed,
    teardown_distributed,
    unwrap_model,
    wrap_model,
)
from hmcam.training.methods import StepContext, TrainingMethod, build_method
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
from hmcam.training.validation import accuracies, fetch

STATE_FORMAT = "hmcam-trainer-state"
STATE_VERSION = 1
MODEL_PREFIX = "model."
METHOD_PREFIX = "method."
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.safetensors"
CURVES_FILE = "curves.png"


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


class Trainer:
    """Trains ``config.model`` on ``config.dataset`` with ``config.method``; see the module docstring.

    Construction loads the data, builds the model, method and optimizer; :meth:`fit` runs (or
    resumes) the epochs and returns the run summary.
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
        self.net = build_model(
            config.model,
            num_classes=self.info.num_classes,
            in_channels=self.info.input_shape[0],
            mean=self.info.mean,
            std=self.info.std,
            **config.model_options,
        ).to(self.device)
        if config.channels_last:
            # Module.to takes memory_format at run time; torch's overloads for it leave the keyword out.
            self.net = self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.method: TrainingMethod = build_method(config.method, dataset=self.info.name, **config.method_kwargs)
        seed_everything(process_seed(config.seed, context.rank))
        self.model = wrap_model(self.net, context)
        self.optimizer = torch.optim.SGD(
            self.net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.schedule = Schedule(
            config.schedule,
            config.lr,
            config.epochs,
            resolve_milestones(config.milestones, config.epochs),
            config.gamma,
            config.cyclic_peak,
        )
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
        self.eval_eps, self.eval_alpha = self._evaluation_threat()
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

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

    def _save_state(self) -> None:
        # Every process contributes its RNG and method state; only rank 0 writes.
        rng_tensors, rng_meta = capture_rng()
        method_tensors = {METHOD_PREFIX + k: v for k, v in self.method.state_dict().items()}
        payloads = all_gather_bytes(pack({**rng_tensors, **method_tensors}, {"rng": rng_meta}), self.context)
        if not self.context.is_main:
            return
        tensors = {MODEL_PREFIX + k: v for k, v in self.net.state_dict().items()}
        optimizer_tensors, optimizer_meta = optimizer_state_to_tensors(self.optimizer.state_dict())
        tensors.update(optimizer_tensors)
        ranks = []
        for rank, payload in enumerate(payloads):
            rank_tensors, rank_meta = unpack(payload)
            tensors.update({f"rank{rank}.{k}": v for k, v in rank_tensors.items()})
            ranks.append(rank_meta)
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

    def _load_state(self) -> None:
        path = self.path(STATE_FILE)
        tensors, meta = load_tensors(path, device="cpu")
        if meta.get("format") != STATE_FORMAT or meta.get("format_version") != STATE_VERSION:
            raise ValueError(f"{path} is not an hmcam trainer state (format {meta.get('format')!r})")
        saved, current = meta["config"], self.config.to_dict()
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
        model_state = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
        self.net.load_state_dict(model_state, strict=True)
        self.optimizer.load_state_dict(optimizer_state_from_tensors(tensors, meta["optimizer"]))
        prefix = f"rank{self.context.rank}."
        mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        restore_rng(mine, meta["ranks"][self.context.rank]["rng"])
        self.method.load_state_dict(
            {k[len(METHOD_PREFIX) :]: v for k, v in mine.items() if k.startswith(METHOD_PREFIX)}
        )
        self.epoch, self.step = meta["epoch"], meta["step"]
        self.history, self.best = meta["history"], meta["best"]

    def _write_metrics(self) -> None:
        # The whole history is rewritten atomically, so a kill can neither truncate the file nor
        # leave a line for an epoch that the state does not hold.
        lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in self.history)
        atomic_write(self.path(METRICS_FILE), lines.encode())

    # ------------------------------------------------------------------------------- training
    def _train_epoch(self) -> dict[str, float]:
        replays = self.method.replays
        steps = self.batches_per_epoch * replays
        self.sampler.set_epoch(self.epoch)
        batches = list(BatchSampler(self.sampler, self.process_batch, drop_last=True))
        self.model.train()
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss sum, correct predictions
        stat_totals: dict[str, Tensor] = {}
        examples = 0
        show = self.context.is_main and self.config.progress
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", unit="batch", disable=not show)
        for b, indices in enumerate(bar):
            index = torch.tensor(indices, dtype=torch.int64)
            images, labels = fetch(self.train_set, index)
            images = images.to(self.device, non_blocking=True)
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(self.device, non_blocking=True)
            count = labels.numel()
            for replay in range(replays):
                lr = self.schedule(self.epoch + (b * replays + replay + 0.5) / steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                context = StepContext(epoch=self.epoch, step=self.step, replay=replay, indices=index)
                self.optimizer.zero_grad(set_to_none=True)
                output = self.method.loss(self.model, images, labels, context)
                output.loss.backward()  # type: ignore[no-untyped-call]  # Tensor.backward has no annotations
                self.method.before_step(self.model, context)
                self.optimizer.step()
                self.step += 1
                examples += count
                correct = (output.logits.detach().argmax(dim=1) == labels).sum()
                totals += torch.stack([output.loss.detach().double() * count, correct.double()])
                for name, value in output.stats.items():
                    value = torch.as_tensor(value, dtype=torch.float64, device=self.device).detach()
                    stat_totals[name] = stat_totals.get(name, 0.0) + value * count
            if show:
                bar.set_postfix(loss=f"{output.loss.item():.4f}", lr=f"{lr:.4g}")
        names = sorted(stat_totals)
        local = torch.cat([totals.new_tensor([examples]), totals, *(stat_totals[n].reshape(1) for n in names)])
        summed = all_reduce_sum(local, self.context).tolist()
        examples = summed[0]
        record = {"train_loss": summed[1] / examples, "train_accuracy": summed[2] / examples, "lr": lr}
        record.update({f"train_{name}": value / examples for name, value in zip(names, summed[3:], strict=True)})
        if not math.isfinite(record["train_loss"]):
            raise FloatingPointError(
                f"the training loss became {record['train_loss']} in epoch {self.epoch + 1}; lower the learning rate"
            )
        return record

    def _finish_epoch(self, record: dict[str, Any]) -> None:
        adversarial = self.method.adversarial and record["robust_accuracy"] is not None
        metric = "robust_accuracy" if adversarial else "clean_accuracy"
        improved = self.best is None or record[metric] > self.best["value"]
        if improved:
            self.best = {"epoch": record["epoch"], "metric": metric, "value": record[metric]}
        self.history.append(record)
        if self.context.is_main:
            self._save_model(LAST_FILE, record)
            if improved:
                self._save_model(BEST_FILE, record)
        self._save_state()
        if self.context.is_main:
            self._write_metrics()
            save_curves(
                self.path(CURVES_FILE),
                self.history,
                f"{self.config.model} on {self.info.name}, {self.method.name} training",
            )

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Run the remaining epochs (all of them unless ``resume`` finds a saved state) and return the summary.

        Without ``resume`` a folder that already holds a trainer state is an error rather than
        being overwritten. With ``resume`` and no state (killed before the first epoch ended), training
        starts from scratch.
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
        started = time.perf_counter()
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
            )
            record["step"] = self.step
            record["train_seconds"] = trained - began
            record["seconds"] = time.perf_counter() - began
            self.epoch += 1
            self._finish_epoch(record)
        return {
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
