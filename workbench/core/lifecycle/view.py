"""RunView: what a dashboard shows of one run, as a fold over the run's rows. No UI here.

Every dashboard (the app's own run, `watch`, queue jobs, data-parallel runs, a past run) feeds
the events of one run, in order, to `RunView.apply`; nothing else (no clock, no lock, no
config) enters the view, so the same rows give the same view whether they arrived live from the
engine or were read from metrics.jsonl. The view mutates in place, so a long run's thousands
of step samples cost O(1) each; `version` counts the changes for screens that redraw lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.events import (
    CheckpointSaved,
    EpochMetrics,
    Evaluating,
    Event,
    Failed,
    Finished,
    ImagesSaved,
    Notice,
    PhaseChanged,
    RunStarted,
    StatusChanged,
    StepMetrics,
)

ACTIVE = ("starting", "training", "paused")  # phases in which someone trains the run
SPEED_SMOOTHING = 0.7  # weight of the past in the shown images/s: one sample is a fraction of a second
SPLITS = ("train", "val", "test")


@dataclass
class Curve:
    """One line of a chart: x in epochs (a step inside epoch 3 sits between 2 and 3)."""

    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # the global step of each point, to cut at a resume

    def add(self, x: float, y: float | None, step: int) -> None:
        if y is None or y != y:  # NaN would blank the whole plot
            return
        self.xs.append(float(x))
        self.ys.append(float(y))
        self.steps.append(int(step))

    def cut_after(self, step: int) -> None:
        """Forget points past `step` (a resume from an earlier checkpoint replays them)."""
        keep = next((i for i, s in enumerate(self.steps) if s > step), len(self.steps))
        del self.xs[keep:], self.ys[keep:], self.steps[keep:]


@dataclass
class PerClass:
    split: str
    epoch: int
    recall: dict[str, float]
    precision: dict[str, float]
    f1: dict[str, float]


@dataclass
class RunView:
    phase: str = "waiting"  # waiting (no row yet), training, paused, finished, stopped, failed, interrupted
    reason: str = ""  # why it stopped, failed or was interrupted
    run_dir: Path | None = None
    arch: str = ""
    params: int = 0
    dataset: str = ""
    device_name: str = ""
    classes: tuple[str, ...] = ()
    train_size: int = 0
    val_size: int = 0
    test_size: int = 0
    batch_size: int = 0
    recipe: str = ""
    training_phase: str = ""  # the recipe's phase (fine-tuning: head only, then every layer); "" for none
    evaluating: tuple[str, float] | None = None  # (split, share done) while a held-out pass reports progress
    epoch: int = 0  # the epoch being trained (1-based), or the last one done
    epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    global_step: int = 0
    elapsed_s: float | None = None
    eta_s: float | None = None
    images_per_s: float | None = None
    gpu_memory_mb: float | None = None
    lr: float | None = None
    best: tuple[float, int] | None = None  # (validation accuracy, epoch) of the best epoch so far
    last_held_out: tuple[str, float] | None = None  # (split, accuracy) of the last evaluation
    per_class: PerClass | None = None  # of the last evaluated epoch
    sessions: int = 0  # start rows seen: 2 after one resume
    carried_s: float = 0.0  # time trained by the earlier sessions: elapsed counts the whole run
    outcome: Finished | Failed | None = None  # how the last session ended
    loss: dict[str, Curve] = field(default_factory=lambda: {name: Curve() for name in ("steps", *SPLITS)})
    accuracy: dict[str, Curve] = field(default_factory=lambda: {name: Curve() for name in ("steps", *SPLITS)})
    lr_curve: Curve = field(default_factory=Curve)
    log: list[Event] = field(default_factory=list)  # what the log shows, in order; the UI words it
    version: int = 0

    @classmethod
    def of(cls, events) -> RunView:
        view = cls()
        for event in events:
            view.apply(event)
        return view

    @property
    def run_name(self) -> str:
        return self.run_dir.name if self.run_dir is not None else ""

    @property
    def active(self) -> bool:
        """Someone trains the run now (as far as its rows say)."""
        return self.phase in ACTIVE

    @property
    def progress(self) -> float:
        total = self.epochs * self.steps_per_epoch
        if not total:
            return 0.0
        return min(max((self.epoch - 1) * self.steps_per_epoch + self.step, 0) / total, 1.0)

    @property
    def curves(self) -> list[Curve]:
        return [*self.loss.values(), *self.accuracy.values(), self.lr_curve]

    # ---- the fold ----------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if not isinstance(event, Evaluating):
            self.evaluating = None  # any other row: the pass is over (or was cut off)
        handler = getattr(self, "_" + type(event).__name__, None)
        if handler is not None:
            handler(event)
            self.version += 1

    def _RunStarted(self, event: RunStarted) -> None:
        self.sessions += 1
        self.phase, self.reason, self.outcome = "training", "", None
        self.run_dir = event.run_dir
        self.arch, self.params, self.dataset = event.arch, event.params, event.dataset
        self.device_name, self.classes, self.recipe = event.device_name, tuple(event.classes), event.recipe
        self.train_size, self.val_size, self.test_size = event.train_size, event.val_size, event.test_size
        self.batch_size, self.epochs, self.steps_per_epoch = event.batch_size, event.epochs, event.steps_per_epoch
        self.epoch, self.step, self.global_step = event.start_epoch + 1, 0, event.start_step
        self.eta_s, self.images_per_s = None, None
        if self.sessions > 1:
            self.carried_s = self.elapsed_s or 0.0
        if event.start_epoch or event.start_step:  # a resume: rows past its checkpoint are history no more
            for curve in self.curves:
                curve.cut_after(event.start_step)
        self.log.append(event)

    def _StepMetrics(self, step: StepMetrics) -> None:
        self._wake(step.global_step)
        x = step.epoch - 1 + step.step / max(step.steps_per_epoch, 1)
        self.loss["steps"].add(x, step.loss, step.global_step)
        self.accuracy["steps"].add(x, step.acc * 100 if step.acc is not None else None, step.global_step)
        self.lr_curve.add(x, step.lr, step.global_step)
        self.epoch, self.step, self.steps_per_epoch = step.epoch, step.step, step.steps_per_epoch
        self.global_step, self.elapsed_s, self.eta_s = step.global_step, self._total(step.elapsed_s), step.eta_s
        self.gpu_memory_mb, self.lr = step.gpu_memory_mb, step.lr
        if step.images_per_s:
            before = self.images_per_s
            self.images_per_s = step.images_per_s if before is None else (
                SPEED_SMOOTHING * before + (1 - SPEED_SMOOTHING) * step.images_per_s)

    def _EpochMetrics(self, epoch: EpochMetrics) -> None:
        self._wake(epoch.global_step or 0)
        for split, loss, acc in (("train", epoch.train_loss, epoch.train_acc), ("val", epoch.val_loss, epoch.val_acc),
                                 ("test", epoch.test_loss, epoch.test_acc)):
            if acc is not None:
                self.loss[split].add(epoch.epoch, loss, epoch.global_step or 0)
                self.accuracy[split].add(epoch.epoch, acc * 100, epoch.global_step or 0)
        self.epochs = max(self.epochs, epoch.epochs or 0)
        self.epoch, self.global_step = epoch.epoch, epoch.global_step or self.global_step
        self.step = self.steps_per_epoch
        self.elapsed_s, self.eta_s = self._total(epoch.elapsed_s), epoch.eta_s
        self.lr = epoch.lr if epoch.lr is not None else self.lr
        if epoch.best_epoch is not None and epoch.best_val_acc is not None:
            self.best = (epoch.best_val_acc, epoch.best_epoch)
        held_out = epoch.held_out
        if held_out is not None:
            self.last_held_out = (held_out[0], held_out[2])
        if epoch.evaluated:
            self.per_class = PerClass(epoch.per_class_split, epoch.epoch, dict(epoch.per_class_acc),
                                      dict(epoch.per_class_precision), dict(epoch.per_class_f1))
        self.log.append(epoch)

    def _StatusChanged(self, event: StatusChanged) -> None:
        if event.status == "interrupted":
            self.phase, self.reason = "interrupted", event.reason
        elif event.status == "paused":
            self.phase, self.reason = "paused", event.reason
        elif event.status == "running":
            self.phase, self.reason = "training", ""
        self.log.append(event)

    def _Finished(self, event: Finished) -> None:
        self.outcome, self.phase, self.reason = event, event.status, event.reason
        self.elapsed_s, self.eta_s = self._total(event.elapsed_s), None
        if event.best_epoch is not None and event.best_val_acc is not None:
            self.best = (event.best_val_acc, event.best_epoch)
        self.log.append(event)

    def _Failed(self, event: Failed) -> None:
        self.outcome, self.phase, self.reason = event, "failed", event.reason
        if event.run_dir is not None:
            self.run_dir = event.run_dir
        self.eta_s = None
        self.log.append(event)

    def _Notice(self, event: Notice) -> None:
        self.log.append(event)

    def _Evaluating(self, event: Evaluating) -> None:
        done = event.images_done / event.images if event.images else 1.0
        self.evaluating = (event.split, done) if done < 1 else None

    def _PhaseChanged(self, event: PhaseChanged) -> None:
        self.training_phase = event.phase
        self.log.append(event)

    def _CheckpointSaved(self, event: CheckpointSaved) -> None:
        self.log.append(event)

    def _ImagesSaved(self, event: ImagesSaved) -> None:
        self.log.append(event)

    def _total(self, session_s: float | None) -> float | None:
        return None if session_s is None else self.carried_s + session_s

    def _wake(self, global_step: int) -> None:
        """Rows of training arrive: someone trains the run now, whatever the last word was
        (rows written before the start rows existed, or after an end the file never got)."""
        if self.phase in ("training", "paused"):
            return
        ended_at = self.outcome.steps_done if isinstance(self.outcome, Finished) else -1
        if self.outcome is None or global_step > ended_at:
            self.phase, self.reason, self.outcome = "training", "", None
