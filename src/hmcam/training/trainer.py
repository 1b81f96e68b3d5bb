"""One trainer for every training method: the loop over epochs and minibatches, evaluation, checkpoints, resume.

:class:`Trainer` builds a run from its :class:`~hmcam.training.config.TrainConfig` (data, network,
method, optimizer) and :meth:`Trainer.fit` runs or resumes its epochs, rank 0 writing the run folder
after each. The parts around the loop have modules of their own: the data and its order
(``datasets``), the scheduled optimizer (``optimizer``), the epoch's metrics and evaluation
(``epoch_meter``, ``epoch_evaluation``), the state that makes resume exact (``trainer_state``), runs
that go wrong (``failures``), seeds (``reproducibility``) and the files for people (``report``).
``docs/training.md`` ("How the trainer works") describes the run folder, exact resume,
multi-process training and failures in full.
"""

from __future__ import annotations

import functools
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hmcam.core.batching import iterate_batches
from hmcam.core.distributed import (
    DistributedContext,
    barrier,
    convert_batchnorm,
    gather_bytes,
    setup_distributed,
    teardown_distributed,
    wrap_model,
)
from hmcam.models import build_model, save_checkpoint
from hmcam.reporting.run_folder import CONFIG_FILE, RunFolder
from hmcam.training.augment import Augmentation
from hmcam.training.config import TrainConfig
from hmcam.training.datasets import EpochOrder, load_datasets
from hmcam.training.epoch_evaluation import EpochEvaluation
from hmcam.training.epoch_meter import EpochMeter
from hmcam.training.examples import ExampleState
from hmcam.training.failures import TrainingCollapsed, TrainingCollapseWarning, collapse_message, stop_if_not_finite
from hmcam.training.methods import Batch, MethodSetup, StepContext, StepMeter, TrainingMethod, build_method
from hmcam.training.optimizer import build_optimizer
from hmcam.training.report import CURVES_FILE, METRICS_FILE, write_history, write_training_report
from hmcam.training.reproducibility import deterministic_algorithms, process_seed, seed_everything
from hmcam.training.tensorboard import TENSORBOARD_DIR, TensorBoardLog
from hmcam.training.trainer_state import ProcessState, TrainerState

LAST_FILE = "last.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.safetensors"


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
        self.train_set, self.test_set = load_datasets(config, context)
        self.info = self.train_set.info
        seed_everything(config.seed)
        self.net = self._build_network()
        self.method: TrainingMethod = build_method(config.method, dataset=self.info.name, **config.method_kwargs)
        seed_everything(process_seed(config.seed, context.rank))
        self.order = EpochOrder(self.train_set, config.batch_size, config.seed, context)
        self.process_batch, self.batches_per_epoch = self.order.process_batch, self.order.batches_per_epoch
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
        self.optimizer = build_optimizer(config, self.method, self.net, self.batches_per_epoch)
        self.augmentation = Augmentation(config.augment, config.augment_padding, config.seed)
        self.evaluate = EpochEvaluation(config, self.test_set, self.info.name, self.method.eps, context)
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    # --------------------------------------------------------------------------------- set-up
    def _build_network(self) -> nn.Module:
        net = build_model(
            self.config.model,
            num_classes=self.info.num_classes,
            in_channels=self.info.input_shape[0],
            mean=self.info.mean,
            std=self.info.std,
            **self.config.model_options,
        ).to(self.device)
        if self.config.channels_last:
            # Module.to takes memory_format at run time; torch's overloads for it leave the keyword out.
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return convert_batchnorm(net, self.context) if self.config.sync_batchnorm else net

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
            "evaluation": self.evaluate.settings(),
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

    def _write_history(self, folder: RunFolder) -> None:
        write_history(folder, self.history, f"{self.config.model} on {self.info.name}, {self.method.name} training")

    def _state(self, processes: list[ProcessState]) -> TrainerState:
        """The trainer state now, with every process's share (gathered onto rank 0)."""
        return TrainerState(
            config=self.config.to_dict(),
            epoch=self.epoch,
            step=self.step,
            history=self.history,
            best=self.best,
            model=self.net.state_dict(),
            optimizer=self.optimizer.state_dict(),
            processes=processes,
            shared=self.method.shared_state_dict(),
            examples=self.examples.state_dict(),
        )

    def _resume(self) -> None:
        path = self.path(STATE_FILE)
        state = TrainerState.load(path)
        state.validate(
            config=self.config,
            world_size=self.context.world_size,
            model=self.net.state_dict(),
            examples=self.examples.names,
            source=path,
        )
        state.restore(
            rank=self.context.rank,
            network=self.net,
            optimizer=self.optimizer,
            method=self.method,
            examples=self.examples,
            source=path,
        )
        self.epoch, self.step, self.history, self.best = state.epoch, state.step, state.history, state.best

    # ------------------------------------------------------------------------------- training
    def _train_epoch(self) -> dict[str, Any]:
        self.method.on_epoch_start(self.epoch)
        batches = self.order.batches(self.epoch)
        self.model.train()
        totals = EpochMeter(self.device)
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
            meter = StepMeter()
            context = StepContext(
                epoch=self.epoch,
                step=self.step,
                indices=index,
                batch=b,
                batches=self.batches_per_epoch,
                examples=self.examples,
                meter=meter,
                schedule=functools.partial(self.optimizer.rate, self.epoch, b),
            )
            # The optimizer sets the scheduled rate before each step the method takes (ScheduledSGD.step).
            self.optimizer.start_batch(self.epoch, b)
            self.method.train_step(self.model, self.optimizer, Batch(images, labels, index), context)
            self.step += self.optimizer.steps_taken
            self.examples.sync()
            if meter.loss is None or meter.correct is None:
                raise RuntimeError(
                    f"training method {self.method.name!r} reported no output for minibatch {b + 1}: "
                    "its train_step must call context.record(output, labels)"
                )
            stop_if_not_finite(
                meter,
                self.context,
                epoch=self.epoch,
                batch=b,
                batches=self.batches_per_epoch,
                step=self.step,
                run_dir=self.run_dir,
            )
            totals.add(meter)
            if show:
                bar.set_postfix(loss=f"{meter.loss.item() / meter.examples:.4f}", lr=f"{self.optimizer.last_rate:.4g}")
        record = {**totals.summary(self.context), "lr": self.optimizer.last_rate, "batches": self.batches_per_epoch}
        record.update(self.method.on_epoch_end(self.epoch))
        return record

    def _run_epoch(self) -> dict[str, Any]:
        """Train the next epoch and evaluate it: its record for ``metrics.jsonl``, with any collapse noted."""
        began = time.perf_counter()
        record: dict[str, Any] = {"epoch": self.epoch + 1}
        record.update(self._train_epoch())
        trained = time.perf_counter()
        record["clean_accuracy"], record["robust_accuracy"] = self.evaluate(self.model)
        record["step"] = self.step
        previous = self.history[-1].get("passes_total", 0.0) if self.history else 0.0
        record["passes_total"] = previous + record["passes"]
        record["train_seconds"] = trained - began
        record["seconds"] = time.perf_counter() - began
        collapse = collapse_message(
            [*self.history, record], self.info.num_classes, self.config.collapse_epochs, self.config.collapse_margin
        )
        if collapse is not None:
            record["collapse"] = collapse
            if self.context.is_main and not self.config.stop_on_collapse:
                # stacklevel 3: the warning points at the caller of fit(), as it did when fit() warned itself.
                warnings.warn(collapse, TrainingCollapseWarning, stacklevel=3)
        return record

    def _finish_epoch(self, record: dict[str, Any], folder: RunFolder) -> None:
        adversarial = self.method.adversarial and record["robust_accuracy"] is not None
        metric = "robust_accuracy" if adversarial else "clean_accuracy"
        improved = self.best is None or record[metric] > self.best["value"]
        if improved:
            self.best = {"epoch": record["epoch"], "metric": metric, "value": record[metric]}
        self.history.append(record)
        # Captured before any file is written, and gathered from every process, as a resume needs.
        payloads = gather_bytes(ProcessState.capture(self.method).to_bytes(), self.context)
        if self.context.is_main:
            self._save_model(LAST_FILE, record)
            if improved:
                self._save_model(BEST_FILE, record)
            self._write_history(folder)
            # Written last: the state is the epoch's commit point.
            self._state([ProcessState.from_bytes(payload) for payload in payloads]).save(self.path(STATE_FILE))
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
            self._resume()
        resumed_from = self.epoch if state_exists else None
        folder = RunFolder(self.run_dir, "training", started=time.time(), device=self.config.device)
        if self.context.is_main:
            folder.write_config(self.resolved())
            if state_exists:
                self._write_history(folder)
        started = time.perf_counter()
        board = TensorBoardLog(self.path(TENSORBOARD_DIR), self.epoch, self.context.is_main and self.config.tensorboard)
        while self.epoch < self.config.epochs:
            record = self._run_epoch()
            self.epoch += 1
            self._finish_epoch(record, folder)
            board.add_epoch(record)
            if "collapse" in record and self.config.stop_on_collapse:
                raise TrainingCollapsed(
                    f"{record['collapse']}. Stopped after saving epoch {record['epoch']} (stop_on_collapse)"
                )
        board.close()
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
            write_training_report(folder, summary, self.history, self.resolved())
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
