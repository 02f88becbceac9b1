"""fit(): one training run from config to checkpoints, reporting through plain events.

Safe to call from a worker thread: it never touches a UI, reports everything through
`events`, and checks `control` between steps for pause, resume and stop. It never
raises for problems with the run; they arrive as a `Failed` event with a sentence.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.augment import AugmentSettings
from workbench.core.config import RunConfig
from workbench.core.control import TrainControl
from workbench.core.data import Dataset, load_dataset
from workbench.core.device import (
    autocast_dtype,
    describe_device,
    gpu_memory_mb,
    pick_device,
    seed_everything,
)
from workbench.core.errors import StopRequested, WorkbenchError
from workbench.core.events import (
    CheckpointSaved,
    EpochMetrics,
    EventSink,
    Failed,
    Finished,
    ImagesSaved,
    Notice,
    RunStarted,
    StepMetrics,
)
from workbench.core.loader import batches_for
from workbench.core.models import count_parameters, create
from workbench.core.optim import build_optimizer, build_scheduler
from workbench.core.snapshots import images_due, save_epoch_images
from workbench.core.speedrun_run import is_speedrun, run_speedrun
from workbench.core.train_state import (
    Progress,
    TrainingParts,
    checkpoint_state,
    load_resume_state,
    progress_from,
    restore,
)
from workbench.core.steps import EvalResult, NonFiniteLoss, StepSample, evaluate, train_one_epoch

MIN_OOM_BATCH = 8  # below this, halving the batch again will not rescue a run


def fit(
    config: RunConfig,
    events: EventSink,
    control: TrainControl | None = None,
    *,
    resume_dir: Path | None = None,
) -> Path | None:
    """Train per `config` (or continue the run in `resume_dir`); returns the run folder."""
    session = _Session(config, events, control or TrainControl())
    try:
        session.run(resume_dir)
    except WorkbenchError as error:
        session.fail(str(error), bad_input=True)
    except StopRequested:  # only raised while data is prepared, before a run folder exists
        events(Finished(None, "stopped", 0, 0.0, 0.0, time.perf_counter() - session.started))
    except NonFiniteLoss as error:
        session.fail(str(error))
    except torch.cuda.OutOfMemoryError:
        session.fail(
            f"the GPU ran out of memory even at batch size {session.batch_size}; "
            "choose a smaller model or image size"
        )
    except Exception as error:  # a bug or an unexpected library failure: keep the details
        session.fail(f"training failed: {type(error).__name__}: {error}", traceback.format_exc())
    return session.run_dir


class _Session:
    """The state of one fit() call; split into methods so each step reads on its own."""

    def __init__(self, config: RunConfig, events: EventSink, control: TrainControl) -> None:
        self.config = config
        self.emit = events
        self.control = control
        self.run_dir: Path | None = None
        self.batch_size = config.batch_size
        self.started = time.perf_counter()

    # ---- lifecycle ----------------------------------------------------------------

    def run(self, resume_dir: Path | None) -> None:
        config = self.config
        device, notices = pick_device(config.device)
        for notice in notices:
            self.emit(Notice(notice, "warning"))
        self.amp_dtype = autocast_dtype(config.precision, device)
        self.device = device
        if resume_dir is None:
            runs.check_writable(Path(config.runs_dir).expanduser())
        seed_everything(config.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        if is_speedrun(config) and resume_dir is not None:
            raise WorkbenchError("speedrun runs are seconds long and cannot be resumed; start a new one")
        data = self._load_data()
        model = create(config.arch, data.channels, data.num_classes, data.image_size).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.data = data

        progress, state = Progress(), None
        if resume_dir is not None:
            self.run_dir = resume_dir
            state = load_resume_state(resume_dir, config.epochs, self.emit)
            progress = progress_from(state)
            self.batch_size = int(state.get("batch_size", self.batch_size))
        else:
            self.run_dir = runs.create_run_dir(config)
        runs.write_status(self.run_dir, "running")
        runs.write_run_info(self.run_dir, self._run_info(data, model))

        if is_speedrun(config):
            from workbench.core import speedrun_train

            self._announce(progress, speedrun_train.steps_per_epoch(len(data.train.labels)))
            run_speedrun(config, data, device, self.run_dir, self.emit, self.control, self.started)
            return
        self._build_training(state)
        self._announce(progress, len(self.train_batches))
        self.emit(Notice(self.train_batches.placement_note))
        self._train(progress)

    def _announce(self, progress: Progress, steps_per_epoch: int) -> None:
        config, data, device, model = self.config, self.data, self.device, self.model
        self.emit(
            RunStarted(
                run_dir=self.run_dir,
                arch=config.arch,
                params=count_parameters(model),
                device=device.type,
                device_name=describe_device(device),
                dataset=config.dataset,
                classes=tuple(data.classes),
                train_size=len(data.train.labels),
                test_size=len(data.test.labels),
                epochs=config.epochs,
                steps_per_epoch=steps_per_epoch,
                start_epoch=progress.epoch,
            )
        )

    def fail(self, reason: str, details: str = "", bad_input: bool = False) -> None:
        if self.run_dir is not None and self.run_dir.exists():
            try:
                runs.write_status(self.run_dir, "failed", reason)
                if details:
                    (self.run_dir / "error.log").write_text(details, encoding="utf-8")
            except OSError:
                pass
        self.emit(Failed(self.run_dir, reason, bad_input=bad_input))

    # ---- setup --------------------------------------------------------------------

    def _load_data(self) -> Dataset:
        config = self.config
        started = time.perf_counter()
        data = load_dataset(
            config.dataset,
            data_dir=config.resolved_data_dir(),
            image_size=config.image_size,
            seed=config.seed,
            val_fraction=config.val_fraction,
            stream_over_mb=config.stream_over_mb,
            log=lambda message: self.emit(Notice(message, _log_level(message))),
            should_stop=lambda: self.control.stop_requested,
        )
        shape = f"{data.image_size}x{data.image_size}x{data.channels}"
        self.emit(
            Notice(
                f"data: {data.name}, {len(data.train.labels)} train / {len(data.test.labels)} "
                f"test images, {shape}, {data.num_classes} classes "
                f"({time.perf_counter() - started:.1f} s)"
            )
        )
        return data

    def _run_info(self, data: Dataset, model: nn.Module) -> dict[str, Any]:
        return {
            "arch": self.config.arch,
            "dataset": data.name,
            "classes": list(data.classes),
            "channels": data.channels,
            "image_size": data.image_size,
            "mean": list(data.mean),
            "std": list(data.std),
            "params": count_parameters(model),
            "train_size": len(data.train.labels),
            "test_size": len(data.test.labels),
            "skipped_files": data.skipped,
            "device": describe_device(self.device),
            "pid": os.getpid(),
        }

    def _build_training(self, state: dict[str, Any] | None) -> None:
        config, data, device = self.config, self.data, self.device
        augment_settings = AugmentSettings(ops=tuple(config.augment))
        channels_last = device.type == "cuda"
        self.train_batches = batches_for(
            data.train.images, data.train.labels, data.mean, data.std, device, self.batch_size,
            shuffle=True, augment_settings=augment_settings, seed=config.seed,
            channels_last=channels_last,
        )
        self.test_batches = batches_for(
            data.test.images, data.test.labels, data.mean, data.std, device,
            max(self.batch_size, 256), shuffle=False, channels_last=channels_last,
        )
        self.optimizer = build_optimizer(self.model, config, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.parts = TrainingParts(self.model, self.optimizer, self.scaler, self.train_batches)
        if state is not None:
            restore(state, self.parts, config)
        self._rebuild_scheduler(state["progress"]["global_step"] if state else 0)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.train_model = torch.compile(self.model) if config.compile else self.model

    def _rebuild_scheduler(self, global_step: int) -> None:
        """The schedule is a function of the step, so rebuilding it resumes it exactly."""
        self.scheduler = build_scheduler(
            self.optimizer, self.config, len(self.train_batches), done_steps=global_step
        )

    # ---- the loop -----------------------------------------------------------------

    def _train(self, progress: Progress) -> None:
        config = self.config
        self.first_global_step = progress.global_step
        self.reported_unreadable: set[int] = set()
        self.train_started = time.perf_counter()
        for epoch in range(progress.epoch + 1, config.epochs + 1):
            if progress.epoch_step and progress.order_state is not None:
                self.train_batches.order_generator.set_state(progress.order_state)
            progress.order_state = self.train_batches.order_generator.get_state()
            order = self.train_batches.epoch_order()
            result = self._train_epoch_with_oom_retry(epoch, order, progress)
            progress.global_step += result.steps_done - progress.epoch_step
            progress.epoch_step = result.steps_done
            if result.stopped:
                self._save_checkpoint(progress, best=False)
                self._finish("stopped", progress)
                return
            self._report_unreadable()
            evaluation = evaluate(self.model, self.test_batches, self.data.num_classes, amp_dtype=self.amp_dtype)
            progress.epoch, progress.epoch_step = epoch, 0
            self._end_epoch(epoch, result, evaluation, progress)
            if self.control.stop_requested:
                self._finish("stopped", progress)
                return
        self._finish("finished", progress)

    def _train_epoch_with_oom_retry(self, epoch: int, order: torch.Tensor, progress: Progress):
        while True:
            try:
                return train_one_epoch(
                    self.train_model, self.train_batches, order, self.optimizer, self.scheduler,
                    self.scaler, self.criterion, self.control,
                    global_step=progress.global_step,
                    start_step=progress.epoch_step,
                    amp_dtype=self.amp_dtype,
                    on_sample=lambda sample: self._on_sample(epoch, sample),
                    keep_first_batch=images_due(epoch, self.config.epochs),
                )
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if self.batch_size // 2 < MIN_OOM_BATCH:
                    raise
                self._halve_batch_after_oom(progress)

    def _report_unreadable(self) -> None:
        """Streamed folders find bad files only while training; say so once per file."""
        found = getattr(self.train_batches, "unreadable", set()) - self.reported_unreadable
        if found:
            files = self.train_batches.files.paths
            names = ", ".join(files[p] for p in sorted(found)[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            self.emit(Notice(f"skipped {len(found)} unreadable images: {names}{more}", "warning"))
            self.reported_unreadable |= found

    def _halve_batch_after_oom(self, progress: Progress) -> None:
        old = self.batch_size
        self.batch_size //= 2
        self.train_batches.batch_size = self.batch_size
        self.test_batches.batch_size = max(self.batch_size, 64)
        # Start the epoch again at the smaller size; the schedule follows the new step count.
        progress.global_step = (progress.epoch) * len(self.train_batches)
        progress.epoch_step = 0
        self._rebuild_scheduler(progress.global_step)
        self.emit(Notice(f"out of GPU memory at batch size {old}: retrying the epoch with {self.batch_size}", "warning"))

    def _on_sample(self, epoch: int, sample: StepSample) -> None:
        steps = len(self.train_batches)
        done = (epoch - 1) * steps + sample.step
        remaining = self.config.epochs * steps - done
        now = time.perf_counter()
        done_here = max(sample.global_step - self.first_global_step, 1)
        eta = (now - self.train_started) / done_here * remaining
        self.emit(
            StepMetrics(
                epoch=epoch,
                step=sample.step,
                steps_per_epoch=steps,
                global_step=sample.global_step,
                loss=sample.loss,
                acc=sample.acc,
                lr=self.optimizer.param_groups[0]["lr"],
                images_per_s=sample.images / max(sample.seconds, 1e-9),
                elapsed_s=now - self.started,
                eta_s=eta,
                gpu_memory_mb=gpu_memory_mb(self.device),
            )
        )
        runs.append_metrics(self.run_dir, {
            "type": "step", "epoch": epoch, "step": sample.step,
            "global_step": sample.global_step, "loss": sample.loss, "acc": sample.acc,
        })

    def _end_epoch(self, epoch: int, result, evaluation: EvalResult, progress: Progress) -> None:
        classes = self.data.classes
        per_class = _per_class_accuracy(evaluation.confusion)
        is_best = evaluation.acc > progress.best_acc
        progress.best_acc = max(progress.best_acc, evaluation.acc)
        elapsed = time.perf_counter() - self.started
        remaining = self.config.epochs - epoch
        record = {
            "type": "epoch",
            "epoch": epoch,
            "global_step": progress.global_step,
            "train_loss": result.loss,
            "train_acc": result.acc,
            "test_loss": evaluation.loss,
            "test_acc": evaluation.acc,
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": result.images / max(result.seconds, 1e-9),
            "epoch_s": result.seconds + evaluation.seconds,
            "elapsed_s": elapsed,
            "per_class_acc": dict(zip(classes, per_class)),
        }
        progress.history.append(record)
        runs.append_metrics(self.run_dir, record)
        self._save_checkpoint(progress, best=is_best)
        if images_due(epoch, self.config.epochs):
            paths = save_epoch_images(
                self.run_dir / "images", epoch, self.data, evaluation, result.first_batch,
                final=epoch == self.config.epochs,
            )
            if paths:
                self.emit(ImagesSaved(tuple(paths)))
        self.emit(
            EpochMetrics(
                epoch=epoch,
                epochs=self.config.epochs,
                global_step=progress.global_step,
                train_loss=result.loss,
                train_acc=result.acc,
                test_loss=evaluation.loss,
                test_acc=evaluation.acc,
                best_acc=progress.best_acc,
                lr=record["lr"],
                images_per_s=record["images_per_s"],
                epoch_s=record["epoch_s"],
                elapsed_s=elapsed,
                eta_s=record["epoch_s"] * remaining,
                per_class_acc=record["per_class_acc"],
            )
        )

    def _save_checkpoint(self, progress: Progress, best: bool) -> None:
        if not ckpt.all_finite(self.model):
            self.emit(Notice("weights are not finite: checkpoint not saved", "warning"))
            return
        folder = self.run_dir / "checkpoints"
        state = checkpoint_state(self.parts, progress, self.batch_size, self.config, self.data)
        path = ckpt.save_last(state, folder)
        self.emit(CheckpointSaved(path, progress.epoch, best=False))
        if best:
            ckpt.save_atomic(state, folder / ckpt.BEST)
            self.emit(CheckpointSaved(folder / ckpt.BEST, progress.epoch, best=True))

    def _finish(self, status: str, progress: Progress) -> None:
        runs.write_status(self.run_dir, status)
        history = progress.history
        self.emit(
            Finished(
                run_dir=self.run_dir,
                status=status,
                epochs_done=progress.epoch,
                best_acc=max(progress.best_acc, 0.0),
                final_acc=history[-1]["test_acc"] if history else 0.0,
                elapsed_s=time.perf_counter() - self.started,
            )
        )


# ---- helpers ---------------------------------------------------------------------------


def _log_level(message: str) -> str:
    return "warning" if any(word in message.lower() for word in ("skip", "unreadable", "cannot")) else "info"


def _per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    totals = confusion.sum(dim=1).clamp(min=1)
    return (confusion.diag().double() / totals).tolist()
