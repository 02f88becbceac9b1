"""WatchScreen: the live dashboard of a run another process trains, read from its run folder.

It is the training dashboard fed by a RunFollower instead of the engine: charts, status and log
from metrics.jsonl and run.json. p and x write the run's control file, which the trainer reads
between steps.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual import work
from textual.binding import Binding

from workbench.core.events import Event, Failed, Finished
from workbench.ui.screens.train import TrainScreen

POLL_S = 0.5


class WatchScreen(TrainScreen):
    SUB_TITLE = "watching"
    BINDINGS = [
        Binding("p", "pause_run", "Pause", tooltip="Pause or resume the watched run (through its control file)"),
        Binding("x", "stop_run", "Stop", tooltip="Stop the watched run; it saves a checkpoint"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        from workbench.core.experiments.follow import RunFollower

        self.follower = RunFollower(run_dir)
        self.run_dir = Path(run_dir)
        self.paused_by_me = False

    def on_mount(self) -> None:
        super().on_mount()
        self.sub_title = escape(f"watching {self.run_dir.name}")
        self.note(f"[b]watching {escape(self.run_dir.name)}[/b]: trained by another process; p pauses, x stops it")
        self._poll()
        self.set_interval(POLL_S, self._poll)

    @work(thread=True, exclusive=True, exit_on_error=False, group="watch", description="reading the run folder")
    def _poll(self) -> None:
        events = self.follower.poll()
        live = self.follower.live
        if events or not live:
            self.app.call_from_thread(self._show, events, live)

    def _show(self, events: list[Event], live: bool) -> None:
        for event in events:
            self.handle(event)
        if not live and self.outcome is None and self.state.phase in ("training", "paused", "starting"):
            self._update(phase="stopped", reason="nobody trains this run now (interrupted?)")

    def handle(self, event: Event) -> None:
        if isinstance(event, (Finished, Failed)) and self.outcome is not None:
            return
        super().handle(event)

    def action_pause_run(self) -> None:
        if self.outcome is not None or not self.follower.live:
            self.notify("The watched run is not training.", severity="warning")
            return
        self.paused_by_me = not self.paused_by_me
        self.follower.send("pause" if self.paused_by_me else "run")
        self._update(phase="paused" if self.paused_by_me else "training")
        self.note("asked the trainer to pause: p resumes" if self.paused_by_me else "asked the trainer to go on")

    def action_stop_run(self) -> None:
        if self.outcome is not None or not self.follower.live:
            self.notify("The watched run is not training.", severity="warning")
            return
        self.follower.send("stop")
        self._update(phase="stopping")
        self.note("asked the trainer to stop: it finishes its step and saves a checkpoint")

    def on_unmount(self) -> None:
        pass  # nothing of ours trains: leaving the screen leaves the run alone
