"""TrainScreen: the live dashboard of a training run (charts, status, log, per-class accuracy)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from workbench.core.config import RunConfig
from workbench.core.events import (
    CheckpointSaved,
    EpochMetrics,
    Event,
    Failed,
    Finished,
    ImagesSaved,
    Notice,
    RunStarted,
    StepMetrics,
)
from workbench.core.training.control import TrainControl
from workbench.core.wording import count as counted
from workbench.ui import formatting as fmt
from workbench.ui.bridge import EngineBridge, EngineEvent, StepsReady
from workbench.ui.widgets.charts import TrainingCharts
from workbench.ui.widgets.class_table import ClassAccuracy
from workbench.ui.widgets.event_log import EventLog
from workbench.ui.widgets.status import RunState, TrainStatus


class TrainScreen(Screen):
    """Owns the training worker; stays installed while the user looks at other screens."""

    TITLE = "workbench"
    SUB_TITLE = "training"

    def __init__(self) -> None:
        super().__init__()
        self.control: TrainControl | None = None
        self.bridge: EngineBridge | None = None
        self.run_dir: Path | None = None
        self.busy = False  # from start() until the training worker has ended
        self.outcome: Finished | Failed | None = None
        self.state = RunState()
        self._fresh_view: tuple[RunConfig, Path | None, list[dict]] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield TrainStatus(id="status")
        yield TrainingCharts(id="charts")
        with Horizontal(id="train-bottom"):
            yield EventLog(id="log")
            yield ClassAccuracy(id="classes")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#log").border_title = "log"
        self.query_one("#classes").border_title = "per class"
        self._show_state()
        self._show_fresh_view()

    @property
    def current_run(self) -> Path | None:
        return self.run_dir

    @property
    def charts(self) -> TrainingCharts:
        return self.query_one(TrainingCharts)

    # ---- commands from the app ------------------------------------------------------

    def start(self, config: RunConfig, resume_dir: Path | None = None, history: list[dict] | None = None) -> bool:
        """Begin training in a thread; False (and nothing happens) while a run is going.

        Safe before the screen is first shown: the view is reset as soon as it is mounted.
        """
        if self.busy:
            return False
        self.busy = True
        self.outcome = None
        self.run_dir = resume_dir
        self.control = TrainControl()
        self.bridge = EngineBridge(self)
        self.state = RunState(phase="starting", epochs=config.epochs, device_name=f"device {config.device}")
        self._fresh_view = (config, resume_dir, history or [])
        if self.is_mounted:
            self._show_fresh_view()
        self._train(config, resume_dir, self.control, self.bridge)
        return True

    def _show_fresh_view(self) -> None:
        """Clear the last run from the charts, table, log and state; the log starts with a header line."""
        if self._fresh_view is None:
            return
        config, resume_dir, history = self._fresh_view
        self._fresh_view = None
        self.charts.reset(config.epochs)
        if history:
            self.charts.show_records(history, config.epochs)
        classes = self.query_one(ClassAccuracy)
        classes.show({})
        classes.border_title = "per class"
        self.query_one(EventLog).reset()  # the last run's lines belong to the last run
        self._show_state()
        what = f"resuming {resume_dir.name}" if resume_dir else f"starting {config.arch} on {config.dataset}"
        how = (f"{config.optimizer} lr {config.lr:g}, {config.schedule} schedule" if config.recipe == "standard"
               else f"the {config.recipe} recipe's own optimizer and schedule")
        self.note(f"[b]{escape(what)}[/b]: {counted(config.epochs, 'epoch')}, batch {config.batch_size}, {how}")

    def toggle_pause(self) -> None:
        if not self.busy or self.control is None or self.state.phase == "stopping":
            self.notify("Nothing is training.", severity="warning")
            return
        paused = self.control.toggle_pause()
        self._update(phase="paused" if paused else "training")
        self.note("paused: p resumes" if paused else "resumed")

    def stop(self) -> None:
        if not self.busy or self.control is None:
            self.notify("Nothing is training.", severity="warning")
            return
        preparing = self.state.phase == "starting"  # no step yet: data or model still being set up
        self.control.stop()
        self._update(phase="stopping")
        self.note("stopping while the run is being set up" if preparing else "stopping: finishing this step, then saving a checkpoint")

    async def stop_and_wait(self, reason: str = "") -> None:
        """Stop and wait for the engine to save its checkpoint and return."""
        if self.control is not None:
            self.control.stop(reason)
        for worker in self.app.workers:
            if worker.node is self and worker.group == "training":
                await worker.wait()

    def note(self, markup: str) -> None:
        """Add a line to the log (Rich markup)."""
        self.query_one(EventLog).add(markup)

    def on_unmount(self) -> None:
        if self.control is not None:
            self.control.stop()  # never leave a training thread behind when the app closes

    # ---- the worker -----------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="training", description="training")
    def _train(self, config: RunConfig, resume_dir: Path | None, control: TrainControl, bridge: EngineBridge) -> None:
        from workbench.core.training.engine import fit

        fit(config, bridge, control, resume_dir=resume_dir)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "training" or not event.worker.is_finished:
            return
        self.busy = False
        if event.state != WorkerState.SUCCESS and self.outcome is None:
            self._update(phase="failed", reason=f"the training thread ended: {event.worker.error}")
        self.app.refresh_bindings()

    # ---- engine events --------------------------------------------------------------

    def on_steps_ready(self, message: StepsReady) -> None:
        self._drain_steps()

    def on_engine_event(self, message: EngineEvent) -> None:
        self._drain_steps()  # steps that arrived before this event belong before it
        self.handle(message.event)

    def _drain_steps(self) -> None:
        if self.bridge is not None:
            for step in self.bridge.take_steps():
                self.handle(step)

    def handle(self, event: Event) -> None:
        """Show one engine event (the bridge calls this; tests may feed recorded events)."""
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            handler(event)

    def _on_RunStarted(self, event: RunStarted) -> None:
        self.run_dir = event.run_dir
        self.sub_title = escape(event.run_dir.name)
        self._update(
            phase="paused" if self.control and self.control.paused else "training",
            run_name=event.run_dir.name, epoch=event.start_epoch + 1, epochs=event.epochs,
            step=0, steps_per_epoch=event.steps_per_epoch, device_name=event.device_name,
        )
        resumed = f", resuming after epoch {event.start_epoch}" if event.start_epoch else ""
        self.note(
            f"run [b]{escape(event.run_dir.name)}[/b]: {event.arch} ({event.params:,} params) on "
            f"{escape(event.device_name)} · {escape(event.dataset)}: {event.train_size:,} train / "
            f"{event.test_size:,} test images, {counted(len(event.classes), 'class')}{resumed}"
        )
        self.app.refresh_bindings()

    def _on_StepMetrics(self, step: StepMetrics) -> None:
        x = step.epoch - 1 + step.step / max(step.steps_per_epoch, 1)
        self.charts.add_step(x, step.loss, step.acc, step.lr)
        self._update(
            epoch=step.epoch, step=step.step, steps_per_epoch=step.steps_per_epoch,
            elapsed_s=step.elapsed_s, eta_s=step.eta_s, images_per_s=step.images_per_s,
            gpu_memory_mb=step.gpu_memory_mb, lr=step.lr,
        )

    def _on_EpochMetrics(self, epoch: EpochMetrics) -> None:
        self.charts.add_epoch(epoch)
        if epoch.best_epoch is not None:
            self.charts.mark_best(epoch.best_epoch)
        if epoch.evaluated:
            classes = self.query_one(ClassAccuracy)
            classes.show(epoch.per_class_acc, epoch.per_class_precision, epoch.per_class_f1)
            classes.border_title = f"per class · {epoch.per_class_split} · epoch {epoch.epoch}"
        held_out = epoch.held_out
        self._update(
            epoch=epoch.epoch, step=self.state.steps_per_epoch, elapsed_s=epoch.elapsed_s,
            eta_s=epoch.eta_s, images_per_s=epoch.images_per_s, lr=epoch.lr,
            best=(epoch.best_val_acc, epoch.best_epoch) if epoch.best_epoch is not None else self.state.best,
            last_held_out=(held_out[0], held_out[2]) if held_out else self.state.last_held_out,
        )
        parts = [f"train loss {epoch.train_loss:.3f} acc {fmt.percent(epoch.train_acc)}"]
        if epoch.val_acc is not None:
            best = " [b green]best so far[/]" if epoch.best_epoch == epoch.epoch else ""
            parts.append(f"val loss {epoch.val_loss:.3f} acc [b]{fmt.percent(epoch.val_acc)}[/b]{best}")
        if epoch.test_acc is not None:
            parts.append(f"test loss {epoch.test_loss:.3f} acc [b]{fmt.percent(epoch.test_acc)}[/b]")
        if not epoch.evaluated:
            parts.append("[dim]not evaluated this epoch[/]")
        parts += [fmt.duration(epoch.epoch_s), fmt.rate(epoch.images_per_s)]
        weakest = sorted(epoch.per_class_acc.items(), key=lambda item: item[1])[:2]
        if weakest:
            parts.append("weakest: " + ", ".join(f"{escape(name)} {fmt.percent(acc, 0)}" for name, acc in weakest))
        self.note(f"epoch {epoch.epoch}/{epoch.epochs}: " + " · ".join(parts))

    def _on_CheckpointSaved(self, event: CheckpointSaved) -> None:
        best = " · new best" if event.best else ""
        self.note(f"[dim]checkpoint {escape(event.path.name)} saved (epoch {event.epoch}{best})[/]")

    def _on_ImagesSaved(self, event: ImagesSaved) -> None:
        names = ", ".join(path.name for path in event.paths)
        self.note(f"images saved: {escape(names)} · [b]i[/b] opens the gallery")

    def _on_Notice(self, event: Notice) -> None:
        if event.level == "warning":
            self.note(f"[yellow]warning: {escape(event.message)}[/]")
            self.notify(event.message, severity="warning")
        else:
            self.note(f"[dim]{escape(event.message)}[/]")

    def _on_Finished(self, event: Finished) -> None:
        self.outcome = event
        self._update(phase=event.status, elapsed_s=event.elapsed_s)
        if event.run_dir is None:
            self.note("[b]stopped while preparing the data set[/b]: no run was started")
            self.notify("Stopped before training began: no run was started.", title="Training stopped")
            return
        summary = event.summary()
        hint = " · [b]e[/b] exports the model, [b]i[/b] shows images" if event.evaluated else ""
        self.note(f"[b]{escape(summary)}[/b]{hint}")
        self.notify(summary, title=f"Training {event.status}")

    def _on_Failed(self, event: Failed) -> None:
        self.outcome = event
        if event.run_dir is not None:
            self.run_dir = event.run_dir
        hint = "fix the setting and press s again" if event.bad_input else "see error.log in the run folder"
        self._update(phase="failed", reason=f"{event.reason} ({hint})")
        self.note(f"[b red]training failed:[/] {escape(event.reason)}")  # the engine's reason has no prefix
        self.notify(f"{event.reason}\n({hint})", title="Training failed", severity="error", timeout=12)

    # ---- state ----------------------------------------------------------------------

    def _update(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)
        self._show_state()

    def _show_state(self) -> None:
        if self.is_mounted:
            self.query_one(TrainStatus).state = self.state
