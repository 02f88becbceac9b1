"""The app's actions behind the keys (and the palette): what each does and when it is offered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.markup import escape
from textual import work
from textual.binding import Binding
from textual.message import Message
from textual.screen import ModalScreen, Screen

from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.shown import shown
from workbench.core.wording import count as counted
from workbench.ui import formatting as fmt
from workbench.ui import workers
from workbench.ui.screens.images import ImagesScreen
from workbench.ui.screens.inspect import InspectScreen
from workbench.ui.screens.modals import confirm_unevaluated_export, offer_resume
from workbench.ui.screens.runs import RunsScreen
from workbench.ui.screens.setup import SetupScreen
from workbench.ui.screens.dashboard import DashboardScreen

if TYPE_CHECKING:
    from workbench.ui.app import WorkbenchApp


@dataclass(frozen=True)
class Action:
    """One thing the app does: its keys (None: palette only), its footer label, its palette title
    and help (also the key's tooltip), and when it is offered (True, None: shown disabled, False)."""

    name: str
    keys: str | None
    label: str
    title: str
    help: str
    when: Callable[[WorkbenchApp, Screen], bool | None] = lambda app, screen: True

    @property
    def binding(self) -> Binding:
        return Binding(self.keys or "", self.name, self.label, id=self.name.replace("_", "-"), tooltip=self.help)


def _export_when(app: WorkbenchApp, screen: Screen) -> bool | None:
    if app.run_shown_on(screen) is not None:
        return True
    return False if isinstance(screen, SetupScreen) else None


def _inspect_when(app: WorkbenchApp, screen: Screen) -> bool | None:
    if isinstance(screen, InspectScreen):
        return False
    return (app.run_shown_on(screen) or app.dashboard.run_dir) is not None or None


def _pause_when(app: WorkbenchApp, screen: Screen, resume: bool) -> bool:
    dashboard = app.dashboard_for(screen)
    return dashboard.can("pause") and dashboard.pausing == resume


# The one table of the app's actions: the bindings, the footer and the command palette read it.
ACTIONS = (
    # Only where the form is in view: s on a finished run's dashboard started a copy of it unasked.
    Action("start", "s,ctrl+s", "Start", "Start training", "Train with the form's values",
           lambda app, screen: isinstance(screen, SetupScreen) and not app.training),
    Action("pause", "p", "Pause", "Pause training", "Pause the run after this step",
           lambda app, screen: _pause_when(app, screen, resume=False)),
    Action("resume", "p", "Resume", "Resume training", "Go on training the paused run",
           lambda app, screen: _pause_when(app, screen, resume=True)),
    Action("stop", "x", "Stop", "Stop training", "Finish the current step, save a checkpoint and stop",
           lambda app, screen: app.dashboard_for(screen).can("stop")),
    Action("export", "e", "Export", "Export the run", "Write safetensors + torch.export files and verify them",
           _export_when),
    Action("lr_find", "l", "LR finder", "Find a learning rate",
           "Sweep the learning rate on a throwaway copy of the model and suggest one",
           lambda app, screen: isinstance(screen, SetupScreen)),
    Action("batch_find", None, "", "Find the largest batch size", "Double the batch until it no longer fits in GPU memory",
           lambda app, screen: isinstance(screen, SetupScreen)),
    Action("images", "i", "Images", "Show images", "The run's inspection PNGs with a preview",
           lambda app, screen: not isinstance(screen, ImagesScreen)),
    Action("inspect", "v", "Inspect", "Inspect the run", "Confusion matrix, per-class accuracy, model, data, predict",
           _inspect_when),
    Action("runs", "r", "Runs", "Show runs", "Past runs in the runs folder",
           lambda app, screen: not isinstance(screen, RunsScreen)),
    Action("dashboard", "d", "Dashboard", "Show the dashboard", "Back to the live training dashboard",
           lambda app, screen: screen is not app.dashboard and (app.dashboard.run_dir is not None or app.training)),
    Action("back", "escape", "Back", "Back", "Close this screen", lambda app, screen: len(app.screen_stack) > 1),
    Action("quit", "q", "Quit", "Quit", "Quit (asks first while training)"),
)
ACTION_BY_NAME = {action.name: action for action in ACTIONS}


class ExportDone(Message):
    def __init__(self, report: workers.ExportReport) -> None:
        super().__init__()
        self.report = report


class ExportUnevaluated(Message):
    def __init__(self, run_dir: Path, steps: int) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.steps = steps


class InterruptedFound(Message):
    def __init__(self, summaries: list) -> None:
        super().__init__()
        self.summaries = summaries


class ResumeReady(Message):
    def __init__(self, run_dir: Path, config, history: list[dict]) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.config = config
        self.history = history


class WorkbenchActions:
    """Mixed into WorkbenchApp: navigation, training control, export and resume."""

    # ---- when each action is offered ----------------------------------------------

    def available(self: WorkbenchApp, action: str, screen: Screen) -> bool | None:
        """True: offered; None: shown but disabled; False: hidden (and the key does nothing)."""
        if isinstance(screen, ModalScreen):  # a question, the LR finder, ...: only its own keys act
            return action == "quit"
        spec = ACTION_BY_NAME.get(action)
        return True if spec is None else spec.when(self, screen)

    def run_shown_on(self: WorkbenchApp, screen: Screen) -> Path | None:
        """The run a screen is about: its own, or on the setup screen the latest one trained."""
        if isinstance(screen, SetupScreen):
            return self.dashboard.run_dir
        return getattr(screen, "current_run", None)

    def check_action(self: WorkbenchApp, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.available(action, self.screen)

    def dashboard_for(self: WorkbenchApp, screen: Screen) -> DashboardScreen:
        """The dashboard p and x act on: the one shown, else the app's own run's."""
        return screen if isinstance(screen, DashboardScreen) else self.dashboard

    # ---- training control -----------------------------------------------------------

    def action_pause(self: WorkbenchApp) -> None:
        self.dashboard_for(self.screen).toggle_pause()

    def action_resume(self: WorkbenchApp) -> None:
        self.dashboard_for(self.screen).toggle_pause()

    def action_stop(self: WorkbenchApp) -> None:
        self.dashboard_for(self.screen).stop()

    def watch_run(self: WorkbenchApp, run_dir: Path) -> None:
        """The dashboard of a run another process trains (or trained), following its folder."""
        self.push_screen(DashboardScreen(run_dir))

    # ---- moving between screens -----------------------------------------------------

    def action_dashboard(self: WorkbenchApp) -> None:
        self._bring_forward(self.dashboard) or self.push_screen("dashboard")

    def action_runs(self: WorkbenchApp) -> None:
        existing = next((s for s in self.screen_stack if isinstance(s, RunsScreen)), None)
        if existing is None or not self._bring_forward(existing):
            self.push_screen(RunsScreen(self.runs_dir))

    def action_images(self: WorkbenchApp) -> None:
        run = self.run_shown_on(self.screen) or self.dashboard.run_dir
        self.push_screen(ImagesScreen(run, self.runs_dir))

    def action_inspect(self: WorkbenchApp) -> None:
        run = self.run_shown_on(self.screen) or self.dashboard.run_dir
        if run is None:
            self.notify("No run to inspect yet: train one, or pick one in the runs list (r).", severity="warning")
            return
        self.push_screen(InspectScreen(run))

    def action_back(self: WorkbenchApp) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()

    def _bring_forward(self: WorkbenchApp, screen: Screen) -> bool:
        """Pop screens above `screen` when it is on the stack; False when it is not."""
        if screen not in self.screen_stack:
            return False
        while self.screen is not screen:
            self.pop_screen()
        return True

    # ---- export ---------------------------------------------------------------------

    def action_export(self: WorkbenchApp) -> None:
        run = self.run_shown_on(self.screen)
        if run is None:
            self.notify("No run to export yet.", severity="warning")
            return
        self._check_then_export(run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export-check", description="export")
    def _check_then_export(self: WorkbenchApp, run_dir: Path) -> None:
        evaluated, steps = workers.evaluated(run_dir)
        if evaluated:
            self.call_from_thread(self._start_export, run_dir)
        else:
            self.post_message(ExportUnevaluated(run_dir, steps))

    def on_export_unevaluated(self: WorkbenchApp, message: ExportUnevaluated) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._start_export(message.run_dir)

        self.push_screen(confirm_unevaluated_export(message.run_dir.name, message.steps), answered)

    def _start_export(self: WorkbenchApp, run_dir: Path) -> None:
        self.notify(f"Exporting {run_dir.name} (safetensors, pt2) and verifying…")
        self._export(run_dir)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export", description="export")
    def _export(self: WorkbenchApp, run_dir: Path) -> None:
        self.post_message(ExportDone(workers.export_and_verify(run_dir)))

    def on_export_done(self: WorkbenchApp, message: ExportDone) -> None:
        report = message.report
        folder = fmt.short_path(report.run_dir / "export")
        verdict = "verified" if report.passed else "VERIFICATION FAILED"
        text = f"exported to {folder} ({verdict} on {report.compared_on}): " + "; ".join(report.checks)
        self.notify(text, title="Export", severity="information" if report.passed else "error", timeout=10)
        if self.dashboard.run_dir == report.run_dir and self.dashboard.is_mounted:
            self.dashboard.note(f"[b]{escape(text)}[/b]")
        from workbench.ui.screens.runs import RunScreen

        if isinstance(self.screen, RunScreen) and self.screen.run_dir == report.run_dir:
            self.screen.reload()  # its line about export/ is out of date now

    # ---- interrupted runs -----------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="interrupted", description="checking for interrupted runs")
    def _look_for_interrupted_runs(self: WorkbenchApp) -> None:
        found = workers.interrupted_runs(self.runs_dir)
        if found:
            self.post_message(InterruptedFound(found))

    def on_interrupted_found(self: WorkbenchApp, message: InterruptedFound) -> None:
        summary = message.summaries[0]
        others = len(message.summaries) - 1
        detail = f"{summary.epochs_done}/{counted(summary.epochs, 'epoch')} done"
        if others:
            detail += f"; {others} other interrupted run{'s' if others > 1 else ''} in the runs list"

        def answered(resume: bool | None) -> None:
            if resume:
                self._prepare_resume(summary.path)

        self.push_screen(offer_resume(summary.name, detail), answered)

    def train_on(self: WorkbenchApp, run_dir: Path, epochs: int) -> None:
        """Resume a run from the runs list to `epochs` in all, on the dashboard."""
        self._prepare_resume(run_dir, epochs)

    @work(thread=True, exclusive=True, exit_on_error=False, group="resume", description="resuming the run")
    def _prepare_resume(self: WorkbenchApp, run_dir: Path, epochs: int | None = None) -> None:
        from workbench.core.runs import read_metrics

        try:
            config = workers.resume_config(run_dir)
            if epochs is not None:
                config = RunConfig.from_mapping({"epochs": epochs}, config, check_paths=False)  # bounded as a flag
        except WorkbenchError as error:
            self.call_from_thread(self.notify, escape(shown(f"Cannot resume {run_dir.name}: {error}")), severity="error")
            return
        self.post_message(ResumeReady(run_dir, config, read_metrics(run_dir)))

    def on_resume_ready(self: WorkbenchApp, message: ResumeReady) -> None:
        self.begin(message.config, resume_dir=message.run_dir, history=message.history)

    # ---- a data-parallel job (the form's devices field) -------------------------------

    def begin_data_parallel(self: WorkbenchApp, config, devices: int) -> None:
        """Start the run on `devices` processes through torch.distributed.run, then watch it."""
        from workbench.launch import start_data_parallel

        try:
            job = start_data_parallel(config, devices)
        except OSError as error:
            self.notify(f"Could not start the data-parallel job: {error}", title="Not started", severity="error")
            return
        self.notify(f"Starting {devices} processes through torch.distributed.run; the dashboard follows rank 0 "
                    f"(its output: {job.log}).", title="Data-parallel run")
        self._follow_job(job)

    @work(thread=True, exit_on_error=False, group="data-parallel", description="waiting for the job's run folder")
    def _follow_job(self: WorkbenchApp, job) -> None:
        """Wait for the job's start row (its run folder), then follow the folder on a dashboard."""
        import time

        while True:
            ended = job.poll() is not None
            run_dir = job.run_dir()
            if run_dir is not None:
                self.call_from_thread(self.watch_run, run_dir)
                return
            if ended:
                self.call_from_thread(self.notify, job.failure(), title="Data-parallel run failed", severity="error")
                return
            time.sleep(0.3)
