"""fit(): one training run from config to checkpoints, for every recipe, reporting through plain events.

Read top to bottom, a run is: pick the device and the recipe; read and check everything a
resume needs (nothing is written before that passes); load the data; build the model and the
recipe's parts; claim the run folder; train epoch by epoch through loop.train_one_epoch;
evaluate held-out data through loop.evaluate; record each epoch (one metrics row, one event,
a checkpoint, images); finish. Safe to call from a worker thread: it never touches a UI,
checks `control` between steps, and never raises for problems with the run: they arrive as a
`Failed` event with a sentence.

Under torchrun the same function runs in every process (distributed.World): each trains its
shard through DistributedDataParallel, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import copy
import time
import traceback
from pathlib import Path

import torch

from workbench.core.config import RunConfig, unread_notices
from workbench.core.data.types import Dataset
from workbench.core.errors import ConfigError, NonFiniteLoss, StopRequested, WorkbenchError
from workbench.core.events import EpochMetrics, EventSink, Failed, Finished
from workbench.core.events import Event, Notice, PhaseChanged, RunStarted, StatusChanged, to_row
from workbench.core.inspection.epoch_images import images_due
from workbench.core.metrics import class_reports
from workbench.core.models import count_parameters
from workbench.core.models.user_file import user_code_failure
from workbench.core.training.control import CONTROL_FILE, TrainControl
from workbench.core.training.device import (
    autocast_dtype,
    describe_device,
    pick_device,
    seed_everything,
)
from workbench.core.training.distributed import World, peer_failure, peer_sentence
from workbench.core.training.early_stop import EpochJudge, Pruner
from workbench.core.training.loop import EvalResult, evaluate, train_one_epoch
from workbench.core.training.parts import Recipe
from workbench.core.training.preparation import build_training, load_run_data, run_info
from workbench.core.training.recipes import recipe_for
from workbench.core.training.report import Meter, TrainTotals
from workbench.core.training.run_folder import RunFolder, find_job_run
from workbench.core.training.start import normalization, resolved, start_notices, starting_point
from workbench.core.training.state import Progress, check_compatible, checkpoint_state
from workbench.core.training.warmup import maybe_compile, warm_up

MIN_OOM_BATCH = 8  # below this, halving the batch again will not rescue a run


def fit(
    config: RunConfig,
    events: EventSink,
    control: TrainControl | None = None,
    *,
    resume_dir: Path | None = None,
    data: Dataset | None = None,
    recipe: Recipe | None = None,
    world: World | None = None,
    run_id: str = "",
    pruner: Pruner | None = None,
) -> Path | None:
    """Train per `config` (or continue the run in `resume_dir`); returns the run folder.

    `data` (a Dataset already loaded) and `recipe` (e.g. the speedrun with other hyperparameters)
    are for tests and benchmarks; normally both follow from `config`, and `world` from torchrun's
    environment. `run_id` is the id a parent process gave this run (recorded in run.json);
    `pruner` is a search trial's, which may end the run after an evaluated epoch.
    """
    world = world or World.from_env()
    config = config.absolute()  # the run records where its data is, not where it was started from
    session = _Session(config, events, control or TrainControl(), world, run_id, pruner)
    try:
        session.run(resume_dir, data, recipe)
    except StopRequested:  # only raised while data is prepared, before a run folder exists
        events(Finished(None, "stopped", 0, session.elapsed_s(), reason=session.control.reason))
    except WorkbenchError as error:
        session.fail(str(error), bad_input=True, field=error.field)
    except NonFiniteLoss as error:
        session.fail(str(error))
    except torch.cuda.OutOfMemoryError:
        session.fail(
            f"the GPU ran out of memory even at batch size {session.batch_size}; "
            "choose a smaller model or image size"
        )
    except Exception as error:  # a bug, a failure in a user's network, or an unexpected library failure
        if world.distributed and peer_failure(error):
            session.fail(peer_sentence(error, world, session.run_dir), traceback.format_exc())
        else:
            said = user_code_failure(error)  # "nets.py line 12: ... during training", or None
            session.fail(str(said) if said else f"{type(error).__name__}: {error}", traceback.format_exc())
    finally:
        session.folder.lock.release()
        world.close()
    return session.run_dir


class _Session:
    """The state of one fit() call; split into methods so each step reads on its own."""

    def __init__(self, config: RunConfig, events: EventSink, control: TrainControl, world: World, run_id: str,
                 pruner: Pruner | None) -> None:
        self.config, self.send, self.world, self.run_id, self.pruner = config, events, world, run_id, pruner
        self.local_control, self.control = control, world.agreed(control)  # stop and pause agreed between ranks
        self.folder = RunFolder(writes=world.is_main)  # only rank 0 writes the run folder
        self.run_dir: Path | None = None  # the folder's path, known to every rank
        self.batch_size = config.batch_size
        self.started = time.perf_counter()
        self.paused_at_start = control.paused_s
        self.train_s = 0.0  # device-timed training and evaluation
        self.warmup_s = 0.0
        self.stop_reason = ""  # why the run ended before its last epoch, when it was not the user

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started - (self.control.paused_s - self.paused_at_start)

    def emit(self, event: Event) -> None:
        """Every event becomes a row of the run's metrics.jsonl, then goes to the caller's sink."""
        self.folder.record(event)
        self.send(event)

    # ---- the run, top to bottom -----------------------------------------------------

    def run(self, resume_dir: Path | None, data: Dataset | None, recipe: Recipe | None) -> None:
        config, world = self.config, self.world
        device, device_notices = pick_device(config.device)
        device = world.place(device)
        self.device, self.amp_dtype = device, autocast_dtype(config.precision, device)
        world.start(device)
        if resume_dir is None and world.restart:  # torchrun restarted the job: go on from its last checkpoint
            resume_dir = world.from_main(lambda: find_job_run(Path(config.runs_dir).expanduser(), world.job))
        self.run_dir = resume_dir
        self.start = None if resume_dir else starting_point(config)  # the weights a new run starts from
        point = world.from_main(lambda: self.folder.open(config, resume_dir))  # rank 0 reads; every rank gets it
        # the size and normalisation the weights were trained with (a resume: as the run first chose them)
        self.config = config = resolved(config, self.start, point.state.get("config") if point else None)
        self.recipe = recipe or recipe_for(config, point.state.get("recipe") if point else None)
        self.recipe.check(config)
        if world.distributed and not self.recipe.data_parallel:
            raise ConfigError("recipe", f"the {self.recipe.name} recipe trains in one process (its whitening, "
                                        "lookahead and per-1024 learning rate are not data-parallel yet); train it "
                                        "without torchrun, or use the standard recipe")
        for notice in device_notices + unread_notices(config):
            self.emit(Notice(notice, "warning"))
        seed_everything(config.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        stats = normalization(self.start) or (point and (point.state.get("mean"), point.state.get("std")))
        self.data = data if data is not None else load_run_data(config, self.emit, self.local_control, stats)
        if point is not None:
            check_compatible(point, config, self.data)
        progress = point.progress if point is not None else Progress()
        self._build(point, progress)
        self._claim_folder(point, progress)
        self._announce(progress)
        self._train(progress)

    def _build(self, point, progress: Progress) -> None:
        """Model, batches and the recipe's parts; a resume's saved state put back (or refused)."""
        built = build_training(self.config, self.data, self.recipe, self.device, point, progress.global_step,
                               world=self.world, start=self.start)
        self.start_record, self.phase = built.start, ""
        self.model, self.train_batches, self.held_out, self.parts = built.model, built.train, built.held_out, built.parts
        self.batch_size, self.model_options, self.views = built.batch_size, built.model_options, built.views
        self.train_s += built.init_s
        self.shards = built.shards
        self.world.decorrelate(self.train_batches.augment_generator, self.config.seed, progress.global_step)

    def _claim_folder(self, point, progress: Progress) -> None:
        """Everything checked: rank 0 takes the run folder (locks it, then writes to it)."""
        info = run_info(self.config, self.data, self.model, self.model_options, self.recipe, self.batch_size,
                        self.device, self.world, self.run_id, self.start_record, self.pruner and self.pruner.record)
        self.run_dir = self.world.from_main(lambda: self.folder.take(self.config, point, progress, info, self.emit))
        if self.world.is_main:  # pause / stop from a watcher in another process; the ranks agree on them
            self.local_control.follow_file(self.run_dir / CONTROL_FILE)
        self.local_control.on_pause_change = lambda paused, why: self.emit(
            StatusChanged("paused" if paused else "running", why))
        split = "val" if self.data.val is not None else "test"
        self.judge = EpochJudge.for_run(self.config, split, progress.history, self.pruner, self.world.is_main)

    def _announce(self, progress: Progress) -> None:
        config, data = self.config, self.data
        steps = len(self.train_batches)
        self.emit(RunStarted(
            run_dir=self.run_dir, arch=config.arch, params=count_parameters(self.model), device=self.device.type,
            device_name=describe_device(self.device), dataset=config.dataset, classes=tuple(data.classes),
            train_size=len(data.train), test_size=len(data.test), epochs=config.epochs, steps_per_epoch=steps,
            start_epoch=progress.epoch, start_step=progress.global_step,
            val_size=len(data.val) if data.val is not None else 0,
            recipe=self.recipe.name, batch_size=self.batch_size,
        ))
        self.emit(Notice(self.recipe.summary(config, steps, self.batch_size)))
        for notice in start_notices(self.start_record, config):
            self.emit(notice)
        self.emit(Notice(self.train_batches.placement_note))
        if note := self.train_batches.split_note():
            self.emit(Notice(note))
        if self.world.distributed:
            self.emit(Notice(self.world.summary(self.batch_size, len(data.train))))
        if data.val is None:
            self.emit(Notice("no validation split (val_fraction 0): no epoch is selected as the best, "
                             "and test accuracy is reported for the last model"))

    # ---- the loop -----------------------------------------------------------------

    def _train(self, progress: Progress) -> None:
        config, train = self.config, self.train_batches
        world = self.world
        self.eval_model, self.warmup_s = maybe_compile(
            config.compile, self.model, self.device, world.distributed, self.emit,
            lambda compiled: warm_up(compiled, self.model, self.parts, train, self.held_out, self.data.num_classes,
                                     self.views, self.amp_dtype))
        self.train_model = world.wrap(self.eval_model)  # DistributedDataParallel in a data-parallel run
        self.meter = Meter(self.emit, self.device, self.control, steps_per_epoch=len(train),
                           total_steps=config.epochs * len(train), lr=lambda: self.parts.lr, batch_size=self.batch_size,
                           ranks=world.size, reduce=world.reduce if world.distributed else None)
        for epoch in range(progress.epoch + 1, config.epochs + 1):
            if world.distributed:  # drawn from seed and epoch, the same on every rank
                order = world.epoch_order(len(train.labels), config.seed, epoch, train.device)
            else:
                if progress.epoch_step and progress.order_state is not None:
                    train.order_generator.set_state(progress.order_state)
                progress.order_state = train.order_generator.get_state()
                order = train.epoch_order()
            self._enter_phase(epoch)
            result = self._train_epoch_with_oom_retry(epoch, order, progress)
            world.agree(self.control)  # every rank ends this epoch knowing whether the run stops
            progress.global_step, progress.epoch_step = self.meter.global_step, result.steps_done
            if result.stopped:
                self.meter.flush()
                self._save_checkpoint(progress, score=None)
                return self._finish("stopped", progress)
            unreadable = self.train_batches.new_unreadable()
            if unreadable:
                self.emit(Notice(unreadable, "warning"))
            last = epoch == config.epochs or self.control.stop_requested
            if last and self.parts.averager is not None:
                self.parts.averager.finish(progress.global_step)
            progress.epoch, progress.epoch_step = epoch, 0
            evaluating = last or self.recipe.evaluate_epoch(epoch, config.epochs)
            save = last or self.recipe.save_every_epoch
            if evaluating or save or result.first_batch is not None:
                totals = self.meter.end_epoch()
                evaluations = self._evaluate(last) if evaluating else {}
                if evaluations and not last and self._early_stop(epoch, evaluations):
                    last = save = True
                    evaluations |= self._evaluate(True, only="test")  # the run ends here: test it
                self._record_epoch(epoch, totals, evaluations, progress, save, result.first_batch)
                if last and self.stop_reason:
                    self.emit(Notice(self.stop_reason))
            else:  # nothing to wait for: the epoch's numbers arrive while the next one trains
                self.meter.end_epoch(on_done=lambda totals, e=epoch: self._record_epoch(e, totals, {}, progress, False))
            if last:
                break
        stopped = self.control.stop_requested and progress.epoch < config.epochs
        self._finish("stopped" if stopped else "finished", progress)

    def _enter_phase(self, epoch: int) -> None:
        """The recipe sets the model up for the epoch (fine-tuning freezes the backbone, then not)."""
        phase = self.recipe.begin_epoch(self.model, epoch, self.config)
        if phase != self.phase:
            self.phase = phase
            self.emit(PhaseChanged(epoch, phase))
            if self.world.distributed:  # DistributedDataParallel learns which parameters train when it wraps
                self.train_model = self.world.wrap(self.eval_model)

    def _train_epoch_with_oom_retry(self, epoch: int, order: torch.Tensor, progress: Progress):
        while True:
            self.meter.start_epoch(epoch, progress.epoch_step, progress.global_step)
            try:
                return train_one_epoch(
                    self.train_model, self.train_batches, order, self.parts, self.control, self.meter,
                    epoch=epoch, start_step=progress.epoch_step, amp_dtype=self.amp_dtype,
                    keep_first_batch=images_due(epoch, self.config.epochs) and progress.epoch_step == 0,
                )
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if self.batch_size // 2 < MIN_OOM_BATCH or self.world.distributed:  # ranks must keep one batch
                    raise
                self._halve_batch_after_oom(progress)

    def _halve_batch_after_oom(self, progress: Progress) -> None:
        """The epoch again at half the batch: the batches follow this session's batch size and the
        recipe rebuilds what depends on it (lr per example, schedule and lookahead lengths),
        keeping momentum, the loss scale and the averaged weights."""
        old, config = self.batch_size, self.config
        self.batch_size //= 2
        train = self.train_batches
        train.batch_size = self.batch_size
        for batches in self.held_out.values():
            batches.batch_size = min(batches.batch_size, max(self.batch_size, 64))
        progress.global_step = progress.epoch * len(train)
        progress.epoch_step = 0
        before, self.parts = self.parts, self.recipe.build(
            self.model, config, self.device, len(train), self.batch_size, progress.global_step)
        self.parts.optimizer.state.update(before.optimizer.state)  # keyed by parameter: the same tensors
        self.parts.scaler = before.scaler
        if before.averager is not None and self.parts.averager is not None:
            self.parts.averager.load_state_dict(before.averager.state_dict())
        self.meter.steps_per_epoch, self.meter.total_steps = len(train), config.epochs * len(train)
        self.meter.batch_size = self.batch_size
        self.emit(Notice(f"out of GPU memory at batch size {old}: retrying the epoch with {self.batch_size}", "warning"))

    def _evaluate(self, last: bool, only: str | None = None) -> dict[str, EvalResult]:
        """Validation every evaluated epoch; test at the end (every epoch when there is no validation)."""
        results = {}
        self.world.align(self.model)  # every rank evaluates rank 0's BatchNorm statistics
        for name, batches in self.held_out.items():
            if (name == "test" and "val" in self.held_out and not last) or (only and name != only):
                continue
            result = evaluate(self.eval_model, batches, self.data.num_classes, views=self.views,
                              amp_dtype=self.amp_dtype, split=name, progress=self.meter.evaluating)
            results[name] = self.world.merge_eval(result, self.shards[name])  # this rank's shard -> the split
            self.train_s += results[name].seconds
        return results

    def _early_stop(self, epoch: int, evaluations: dict[str, EvalResult]) -> bool:
        """Early stopping and a search's pruner judge the epoch; True (the reason noted) when the run ends here."""
        reason = self.judge.verdict(epoch, evaluations, self.config.early_stop_on, self.world.from_main)
        self.stop_reason = reason or self.stop_reason  # said after the epoch's own line (_train)
        return bool(reason)

    # ---- what an epoch leaves behind ------------------------------------------------

    def _record_epoch(self, epoch: int, totals: TrainTotals, evaluations: dict[str, EvalResult],
                      progress: Progress, save: bool, first_batch=None) -> None:
        val, test = evaluations.get("val"), evaluations.get("test")
        is_best = val is not None and (progress.best_val_acc is None or val.acc > progress.best_val_acc)
        if is_best:
            progress.best_epoch, progress.best_val_acc = epoch, val.acc
        shown = val or test
        reports = class_reports(shown.confusion, self.data.classes) if shown else []
        self.train_s += totals.seconds
        epoch_s = totals.seconds + sum(result.seconds for result in evaluations.values())
        extra = {f"{r.split}_acc_one_view": r.plain_acc for r in evaluations.values() if len(self.views) > 1}
        event = EpochMetrics(
            epoch=epoch, epochs=self.config.epochs, global_step=totals.global_step,
            train_loss=totals.loss, train_acc=totals.acc,
            val_loss=val.loss if val else None, val_acc=val.acc if val else None,
            test_loss=test.loss if test else None, test_acc=test.acc if test else None,
            best_epoch=progress.best_epoch, best_val_acc=progress.best_val_acc, lr=totals.lr,
            images_per_s=totals.images / max(totals.seconds, 1e-9), epoch_s=epoch_s,
            elapsed_s=self.meter.elapsed_s(), eta_s=epoch_s * (self.config.epochs - epoch),
            per_class_acc={r.name: r.recall for r in reports}, per_class_split=shown.split if shown else None,
            per_class_precision={r.name: r.precision for r in reports}, per_class_f1={r.name: r.f1 for r in reports},
            extra=extra,
        )
        progress.history.append(to_row(event))
        self.emit(event)
        if save:
            self._save_checkpoint(progress, score=val.acc if val is not None else None)
        if first_batch is not None and self.shards["train"] is not None:
            first_batch = (first_batch[0], self.shards["train"][first_batch[1]])  # positions in the whole split
        if shown is not None or first_batch is not None:
            self.folder.save_images(epoch, self.data, test or val, first_batch, self.emit)

    def _save_checkpoint(self, progress: Progress, score: float | None) -> None:
        state = lambda: checkpoint_state(self.model, self.parts, self.train_batches, progress, self.batch_size,  # noqa: E731
                                         self.config, self.data, self.recipe, self.model_options)
        self.folder.save_checkpoint(self.model, state, progress.epoch, score, self.emit, progress.epoch_step)

    def _finish(self, status: str, progress: Progress) -> None:
        self.meter.flush()
        last = progress.history[-1] if progress.history else {}
        final_test = last.get("test_acc") if last.get("epoch") == progress.epoch and not progress.epoch_step else None
        best_test = final_test if progress.best_epoch == progress.epoch else self._best_model_test_acc(progress)
        reason = self.control.reason or self.stop_reason
        status = "pruned" if self.judge.pruned and status == "finished" else status
        self.folder.write_status(status, reason)
        event = Finished(
            run_dir=self.run_dir, status=status, epochs_done=progress.epoch, elapsed_s=self.elapsed_s(),
            best_epoch=progress.best_epoch, best_val_acc=progress.best_val_acc, best_test_acc=best_test,
            final_test_acc=final_test, steps_done=progress.global_step, train_s=self.train_s,
            warmup_s=self.warmup_s, reason=reason,
        )
        self.emit(event)

    def _best_model_test_acc(self, progress: Progress) -> float | None:
        """The selected epoch's model on the test split (its checkpoint), once, at the end."""
        if progress.best_epoch is None or "test" not in self.held_out:
            return None
        best = copy.deepcopy(self.model)
        if not self.world.share_weights(best, self.folder.best_weights()):  # rank 0 read it; every rank evaluates its shard
            return None
        result = evaluate(best, self.held_out["test"], self.data.num_classes, views=self.views,
                          amp_dtype=self.amp_dtype, split="test", progress=self.meter.evaluating)
        return self.world.merge_eval(result, self.shards["test"]).acc

    def fail(self, reason: str, details: str = "", bad_input: bool = False, field: str | None = None) -> None:
        """Report a failure; the run folder records it only when this process owned it."""
        self.folder.record_failure(reason, details)
        self.run_dir = self.folder.path or self.run_dir  # a new run's folder may exist before every rank knows it
        self.emit(Failed(self.run_dir, reason, bad_input=bad_input, field=field))
