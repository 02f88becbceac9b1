"""DashboardScreen: the one dashboard of a run (charts, status, log, per-class accuracy).

It draws a RunView, and the view is fed by the run's source: live from the engine (this app
trains the run in a thread of its own) or by following the run folder that another process
writes (`watch`, queue jobs, data-parallel runs, enter on a running run). Both sources hand the
run's events to the same fold in the same order, so a run looks the same whoever trains it.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual import work
from textual.markup import escape as escape_title
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Header
from textual.worker import Worker, WorkerState

from workbench.core.config import RunConfig
from workbench.core.events import Event, Failed, Notice, StepMetrics, from_row
from workbench.core.lifecycle.view import RunView
from workbench.core.shown import shown
from workbench.core.training.control import TrainControl
from workbench.ui.bridge import EngineBridge, EngineEvent, StepsReady
from workbench.ui.log_lines import log_line
from workbench.ui.widgets.charts import TrainingCharts
from workbench.ui.widgets.class_table import ClassAccuracy
from workbench.ui.widgets.event_log import EventLog
from workbench.ui.widgets.status import TrainStatus
from workbench.ui.widgets.footer import FittedFooter

FOLLOW_POLL_S = 0.5  # how often a followed run folder is read


class DashboardScreen(Screen):
    """A run's dashboard; with `run_dir` it follows that folder, else it waits for `start`."""

    TITLE = "workbench"
    SUB_TITLE = "dashboard"
    BINDINGS = [Binding("o", "other_panels", "Panels", tooltip="A small terminal: the learning-rate chart and the "
                                                             "per-class table in place of the loss chart and the log")]

    def __init__(self, run_dir: Path | None = None) -> None:
        super().__init__()
        self.view = RunView()
        self.followed = Path(run_dir) if run_dir is not None else None  # None: this app trains the run
        self.control: TrainControl | None = None
        self.bridge: EngineBridge | None = None
        self.busy = False  # from start() until the training worker has ended
        self.asked = ""  # "pausing", "going on" or "stopping" until the trainer's row answers
        self._logged = 0  # view.log entries already in the log widget
        self._shown_classes = None
        self._replayed = False  # the first read of a followed folder replays the past: no toasts for it
        self._follower = None
        if self.followed is not None:
            from workbench.core.lifecycle.follow import RunFollower

            self._follower = RunFollower(self.followed)
            self.sub_title = escape_title(shown(self.followed.name))

    def compose(self) -> ComposeResult:
        yield Header()
        yield TrainStatus(id="status")
        yield TrainingCharts(id="charts")
        with Horizontal(id="train-bottom"):
            yield EventLog(id="log")
            yield ClassAccuracy(id="classes")
        yield FittedFooter()

    def action_other_panels(self) -> None:
        """Swap the panels a small terminal hides (lr chart, per class) with the loss chart and the log."""
        self.toggle_class("-panels")
        self._say_hidden()
        self.call_after_refresh(self._draw_what_was_hidden)

    def _draw_what_was_hidden(self) -> None:
        """A hidden chart is not drawn and a hidden log wraps at its smallest width: now that they
        show, draw them at their size."""
        self.query_one("#log", EventLog).rewrap()
        self.query_one(TrainingCharts).redraw_now()

    def _say_hidden(self) -> None:
        swapped = self.has_class("-panels")
        self.query_one("#log").border_subtitle = "" if swapped else "o: the lr chart and per-class table, on a small terminal"
        self.query_one("#classes").border_subtitle = "o: back to the loss chart and the log" if swapped else ""

    def on_mount(self) -> None:
        self._say_hidden()
        self.query_one("#log").border_title = "log"
        self.query_one("#classes").border_title = "per class"
        self._redraw(reset=True)
        if self._follower is not None:  # a toast, not a log line: the log is the run's own, the same from any source
            self.notify(f"Following {self.followed.name}: the process that trains it writes its folder; "
                        "p pauses and x stops it through the run's control file.", timeout=6)
            self._poll_folder()
            self.set_interval(FOLLOW_POLL_S, self._poll_folder)

    # ---- what the app asks ------------------------------------------------------------

    @property
    def run_dir(self) -> Path | None:
        return self.view.run_dir or self.followed

    @property
    def current_run(self) -> Path | None:
        return self.run_dir

    @property
    def charts(self) -> TrainingCharts:
        return self.query_one(TrainingCharts)

    @property
    def outcome(self):
        return self.view.outcome

    def can(self, action: str) -> bool:
        """Whether pause or stop can reach this run's trainer now."""
        if self.followed is None:
            return self.busy and self.control is not None and (action == "pause" or self.asked != "stopping")
        return self.view.active and self.asked != "stopping"

    def start(self, config: RunConfig, resume_dir: Path | None = None, history: list[dict] | None = None) -> bool:
        """Train in a thread of this app; False (and nothing happens) while a run is going.
        `history` (a resumed run's rows so far) is shown first. Safe before the screen is shown."""
        if self.busy or self.followed is not None:
            return False
        self.busy, self.asked, self._replayed = True, "", True
        self.control = TrainControl()
        self.bridge = EngineBridge(self)
        self.view = RunView.of(event for row in history or () if (event := from_row(row, resume_dir)) is not None)
        self._redraw(reset=True)
        what = f"resuming {resume_dir.name}" if resume_dir else f"starting {config.arch} on {config.dataset}"
        self.note(f"[b]{escape(what)}[/b]: preparing the data and the model…")
        self._train(config, resume_dir, self.control, self.bridge)
        return True

    @property
    def pausing(self) -> bool:
        """Paused, or asked to pause: p now means go on."""
        return self.asked == "pausing" or (self.view.phase == "paused" and self.asked != "going on")

    def toggle_pause(self) -> None:
        if not self.can("pause"):
            self.notify("This run is not training.", severity="warning")
            return
        pausing = not self.pausing
        if self.followed is not None:
            self._follower.send("pause" if pausing else "run")
        elif pausing:
            self.control.pause()
        else:
            self.control.resume()
        self.asked = "pausing" if pausing else "going on"
        self.note("asked the trainer to pause after this step" if pausing else "asked the trainer to go on")
        self._redraw()
        self.app.refresh_bindings()

    def stop(self) -> None:
        if not self.can("stop"):
            self.notify("This run is not training.", severity="warning")
            return
        if self.followed is not None:
            self._follower.send("stop")
        else:
            self.control.stop()
        self.asked = "stopping"
        self.note("stopping: the trainer finishes its step and saves a checkpoint")
        self._redraw()

    async def stop_and_wait(self, reason: str = "") -> None:
        """Stop this app's own run and wait for the engine to save its checkpoint and return."""
        if self.control is not None:
            self.control.stop(reason)
        for worker in self.app.workers:
            if worker.node is self and worker.group == "training":
                await worker.wait()

    def note(self, markup: str) -> None:
        """A line of this app's own in the log (Rich markup): what the user asked, not the run's rows."""
        if self.is_mounted:
            self.query_one(EventLog).add(markup)

    def on_unmount(self) -> None:
        if self.control is not None:
            self.control.stop()  # never leave a training thread behind when the app closes

    # ---- the live source: the engine in a thread of this app -----------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="training", description="training")
    def _train(self, config: RunConfig, resume_dir: Path | None, control: TrainControl, bridge: EngineBridge) -> None:
        from workbench.core.training.engine import fit

        fit(config, bridge, control, resume_dir=resume_dir)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "training" or not event.worker.is_finished:
            return
        self.busy = False
        if event.state != WorkerState.SUCCESS and self.view.outcome is None:
            self.show([Failed(self.view.run_dir, f"the training thread ended: {event.worker.error}")])
        self.app.refresh_bindings()

    def on_steps_ready(self, message: StepsReady) -> None:
        if self.bridge is not None:
            self.show(self.bridge.take_steps())

    def on_engine_event(self, message: EngineEvent) -> None:
        steps = self.bridge.take_steps() if self.bridge is not None else []
        self.show([*steps, message.event])  # steps that arrived before the event belong before it

    # ---- the folder source: another process writes the run folder ------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow", description="reading the run folder")
    def _poll_folder(self) -> None:
        events, restarted = self._follower.poll()
        if events or restarted:
            self.app.call_from_thread(self.show, events, restarted)

    # ---- one way in --------------------------------------------------------------------

    def show(self, events: list[Event], restart: bool = False) -> None:
        """Fold the run's events into the view and redraw; `restart`: they are the whole run again."""
        if restart:
            self.view = RunView()
        before = (self.view.phase, self.view.outcome, self.view.sessions)
        live = self._replayed and not restart
        for event in events:
            try:
                self.view.apply(event)
            except (TypeError, ValueError, ArithmeticError, AttributeError):  # a damaged row: skip it, keep the rest
                continue
            if isinstance(event, Notice) and event.level == "warning" and live:
                self.notify(shown(event.message), severity="warning")
        trained = any(isinstance(event, StepMetrics) for event in events)
        if (self.view.phase, self.view.outcome, self.view.sessions) != before or (
                self.asked == "going on" and self.view.phase == "training" and trained):
            self.asked = ""  # the trainer answered (or never stopped: a pause taken back before the next step)
            if live:
                self._announce_end(before[1])
            self.app.refresh_bindings()
        self._redraw(reset=restart)
        self._replayed = True

    def _announce_end(self, outcome_before) -> None:
        outcome = self.view.outcome
        if outcome is None or outcome is outcome_before or not self.is_mounted:
            return
        if isinstance(outcome, Failed):
            hint = "fix the setting and press s again" if outcome.bad_input else "see error.log in the run folder"
            self.notify(f"{shown(outcome.reason)}\n({hint})", title="Training failed", severity="error", timeout=12)
        elif outcome.run_dir is None:
            self.notify("Stopped before training began: no run was started.", title="Training stopped")
        else:
            self.notify(shown(outcome.summary()), title=f"Training {shown(outcome.status)}")

    def _redraw(self, reset: bool = False) -> None:
        if not self.is_mounted:
            return
        view = self.view
        self.sub_title = escape_title(shown(view.run_name or (self.followed.name if self.followed else "dashboard")))
        self.query_one(TrainStatus).show(view, self.asked)
        self.charts.show(view)
        log = self.query_one(EventLog)
        if reset:
            log.reset()
            self._logged = 0
        for event in view.log[self._logged:]:
            try:
                line = log_line(event)
            except (TypeError, ValueError, AttributeError):  # a damaged row: the log goes on without it
                line = None
            if line is not None:
                log.add(line)
        self._logged = len(view.log)
        if view.per_class is not self._shown_classes:
            self._shown_classes = classes = view.per_class
            table = self.query_one(ClassAccuracy)
            if classes is None:
                table.show({})
                table.border_title = "per class"
            else:
                table.show(classes.recall, classes.precision, classes.f1)
                table.border_title = f"per class · {classes.split} · epoch {classes.epoch}"
