"""WorkbenchApp: screens, key bindings and the factory the CLI and the tests use."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from textual import events, work
from textual.app import App
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from workbench.core import exit_codes
from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.ui import workers
from workbench.ui.actions import ACTIONS, WorkbenchActions
from workbench.ui.palette import WorkbenchCommands
from workbench.ui.screens.lr_find import LrFindScreen
from workbench.ui.screens.modals import Question, TooSmall, confirm_quit
from workbench.ui.screens.setup import SetupScreen
from workbench.ui.screens.dashboard import DashboardScreen
from workbench.ui.settings import config_values, default_config_dir, read_last_values

MIN_SIZE = (56, 16)
EXIT_TERMINATED = exit_codes.TERMINATED


class WorkbenchApp(WorkbenchActions, App[int]):
    """Setup -> dashboard, with images and runs on top; training keeps going underneath."""

    CSS_PATH = "workbench.tcss"
    TITLE = "workbench"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (72, "-normal"), (100, "-roomy"), (140, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    BINDINGS = [action.binding for action in ACTIONS if action.keys]  # one table: ui/actions.py

    def __init__(self, values: dict[str, Any], *, data_dir: str, config_dir: Path) -> None:
        super().__init__()
        self.setup_screen = SetupScreen(values, data_dir=data_dir, config_dir=config_dir)
        self.dashboard = DashboardScreen()

    def get_default_screen(self) -> Screen:
        return self.setup_screen

    def on_mount(self) -> None:
        self.install_screen(self.dashboard, "dashboard")
        self.on_resize(events.Resize(self.size, self.size))
        self.call_after_refresh(self._look_for_interrupted_runs)
        try:  # what `timeout`, systemd and `docker stop` send: stop cleanly, as headless train does
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.terminate)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            pass

    def on_unmount(self) -> None:
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    def terminate(self) -> None:
        """SIGTERM: the run (if any) finishes its step and saves a checkpoint, then the app exits 143."""
        if self.training:
            self.notify("SIGTERM: stopping, saving a checkpoint, then quitting…", severity="warning")
            self._stop_then_exit(EXIT_TERMINATED, "SIGTERM")
        else:
            self.exit(EXIT_TERMINATED, return_code=EXIT_TERMINATED)

    def on_resize(self, event: events.Resize) -> None:
        too_small = event.size.width < MIN_SIZE[0] or event.size.height < MIN_SIZE[1]
        notice = next((s for s in self.screen_stack if isinstance(s, TooSmall)), None)
        if too_small and notice is None:
            self.push_screen(TooSmall(MIN_SIZE))
        elif notice is not None and not too_small and self.screen is notice:
            self.pop_screen()

    def notify(self, message: str, *, markup: bool = False, **options) -> None:
        """Every notification shows its text literally: paths and reasons may hold [brackets]."""
        super().notify(message, markup=markup, **options)

    @property
    def runs_dir(self) -> Path:
        """The runs folder the form shows: the runs list and new runs both use it."""
        return self.setup_screen.runs_dir

    @property
    def training(self) -> bool:
        return self.dashboard.busy

    # ---- starting a run -------------------------------------------------------------

    def action_start(self) -> None:
        if self.training:
            self.notify("A run is already training: x stops it, p pauses it.", severity="warning")
            return
        self.setup_screen.request_start()

    def on_setup_screen_start_requested(self, message: SetupScreen.StartRequested) -> None:
        if message.devices > 1:
            self.begin_data_parallel(message.config, message.devices)
        else:
            self.begin(message.config)

    # ---- tuning tools ---------------------------------------------------------------

    def action_lr_find(self) -> None:
        self.setup_screen.request_tuning("lr-find")

    def action_batch_find(self) -> None:
        self.setup_screen.request_tuning("batch-find")

    def on_setup_screen_tune_requested(self, message: SetupScreen.TuneRequested) -> None:
        config = message.config
        if message.tool == "batch-find":
            self.notify(f"Finding the largest batch for {config.arch} (doubling until out of GPU memory)…")
            self._batch_find(config)
            return
        if config.recipe == "speedrun":
            self.notify(f"The {config.recipe} recipe brings its own learning rate; the LR finder tunes the "
                        "standard recipe's.", severity="warning")
            return

        def answered(lr: float | None) -> None:
            if lr is not None:
                self.setup_screen.set_value("lr", f"{lr:.3g}")
                self.notify(f"Learning rate set to {lr:.3g} (the LR finder's suggestion).")

        self.push_screen(LrFindScreen(config), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="batch-find", description="the batch-size finder")
    def _batch_find(self, config: RunConfig) -> None:
        largest, reason = workers.find_batch_size(config)
        self.call_from_thread(self._batch_found, largest, reason)

    def _batch_found(self, largest: int, reason: str) -> None:
        self.setup_screen.set_value("batch_size", str(largest))
        self.notify(f"Batch size set to {largest}, the largest that fits ({reason}).")

    def begin(self, config: RunConfig, resume_dir: Path | None = None, history: list[dict] | None = None) -> None:
        """Start training on the dashboard and show it (never awaits inside a message handler)."""
        if not self.dashboard.start(config, resume_dir, history):
            self.notify("A run is already training: x stops it, p pauses it.", severity="warning")
            return
        self.action_dashboard()
        self.refresh_bindings()

    # ---- quitting -------------------------------------------------------------------

    async def action_quit(self) -> None:
        if not self.training:
            self.exit(0)
        elif not isinstance(self.screen, Question):
            self.push_screen(confirm_quit(), self._quit_answered)

    def _quit_answered(self, stop_and_quit: bool | None) -> None:
        if stop_and_quit:
            self.notify("Stopping: saving a checkpoint, then quitting…")
            self._stop_then_exit()

    @work(exclusive=True, group="quit", description="stopping training")
    async def _stop_then_exit(self, code: int = 0, reason: str = "") -> None:
        await self.dashboard.stop_and_wait(reason)
        self.exit(code, return_code=code)

    # ---- failures of any worker -----------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        reason = str(error) if isinstance(error, WorkbenchError) else f"{type(error).__name__}: {error}"
        self.notify(f"{event.worker.description or 'a background task'} failed: {reason}", severity="error", timeout=12)


def build_app(
    initial: RunConfig | None = None,
    runs_dir: Path | None = None,
    config_dir: Path | None = None,
    data_dir: Path | None = None,
) -> WorkbenchApp:
    """The app, with the form filled from `initial`, else from the last values used.

    Folders are never remembered from an earlier launch (a --runs-dir given once must not
    redirect later ones): the runs folder is the form's field, ./runs unless given now.
    """
    config_dir = Path(config_dir) if config_dir is not None else default_config_dir()
    values = config_values(initial) if initial is not None else read_last_values(config_dir)
    if runs_dir is not None:
        values["runs_dir"] = str(runs_dir)
    data = str(data_dir) if data_dir is not None else str(values.get("data_dir") or "")
    return WorkbenchApp(values, data_dir=data, config_dir=config_dir)


def run_app(initial: RunConfig | None = None) -> int:
    """Run the app in this terminal; returns the exit code."""
    result = build_app(initial).run()
    return result if isinstance(result, int) else 0
