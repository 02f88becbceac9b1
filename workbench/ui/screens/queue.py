"""QueueScreen: the jobs of the runs folder's queue; `a` adds the form as a job, `g` starts the
queue (a `workbench queue run` process of its own), `G` stops it (its jobs save a checkpoint and
go back to the queue). Jobs run as subprocesses, never in the app's process. Below, the trials of
the search studies in the runs folder's journal (`workbench sweep --search tpe`): each trial's
state (finished, pruned, failed, training), its values and why it was pruned, and each study's
counts, best trial and importances."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from workbench.core.errors import WorkbenchError
from workbench.core.shown import shown
from workbench.ui.widgets.footer import FittedFooter

STATE_STYLES = {"pending": "", "running": "cyan", "done": "green", "failed": "red", "stopped": "yellow",
                "finished": "green", "pruned": "yellow", "training": "cyan", "waiting": ""}
REFRESH_S = 1.0


class JobsListed(Message):
    def __init__(self, jobs: list, counts: dict[str, int] | None = None, studies: list | None = None) -> None:
        super().__init__()
        self.jobs = jobs
        self.counts = counts if counts is not None else {}
        self.studies = studies or []  # (summary lines, trial rows) per search study


class QueueScreen(Screen):
    TITLE = "workbench"
    SUB_TITLE = "queue"
    BINDINGS = [
        Binding("a", "add_job", "Add the form", tooltip="Queue the setup form's run as a job"),
        Binding("g", "start_queue", "Start queue", tooltip="Work through the queue in a process of its own"),
        Binding("G", "stop_queue", "Stop queue", tooltip="Stop the queue: running jobs save a checkpoint"),
    ]

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.jobs: dict[str, object] = {}  # by row key, as last listed
        self._states: dict[int, str] | None = None  # each job's state when last listed
        self._searches: dict = {}  # the runs folder's search studies, by name, as last listed
        self._pending = False  # whether the queue had pending jobs when last listed: g starts them

    @property
    def runner(self) -> subprocess.Popen | None:
        """The `queue run` process this app started, if any: kept by the app, so it outlives the screen."""
        child = getattr(self.app, "queue_runner_child", None)
        return child.process if child is not None else None

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(cursor_type="row", zebra_stripes=True, id="queue-table")
        yield Static("", id="queue-hint", markup=False)
        yield Static("", id="study-summary", markup=False)
        yield DataTable(cursor_type="row", zebra_stripes=True, id="trial-table")
        yield FittedFooter()

    def on_mount(self) -> None:
        table = self.query_one("#queue-table", DataTable)
        for label in ("job", "state", "run", "note", "gpu", "sweep", "train flags"):
            table.add_column(label, key=label)
        trials = self.query_one("#trial-table", DataTable)
        for label in ("trial", "state", "validation", "why", "values", "run"):
            trials.add_column(label, key=label)
        self.trials: dict[str, str] = {}  # row key -> run folder
        self.query_one("#study-summary").display = trials.display = False
        table.focus()
        self._list()
        self.set_interval(REFRESH_S, self._list)

    @work(thread=True, exclusive=True, exit_on_error=False, group="queue", description="reading the queue")
    def _list(self) -> None:
        from workbench.core.experiments.queue import JobQueue
        from workbench.core.experiments.search.results import local_searches, summary_lines, trial_rows

        searches = local_searches(self.runs_dir, self._searches)  # kept: each refresh reads what the journal gained
        self._searches = {search.name: search for search in searches}
        studies = [(summary_lines(search), search.name, trial_rows(search)) for search in searches]
        self.post_message(JobsListed(*JobQueue(self.runs_dir).listing(), studies))  # the rows shown, not all

    def on_jobs_listed(self, message: JobsListed) -> None:
        self._say_what_ended(message.jobs)
        child = getattr(self.app, "queue_runner_child", None)
        if child is not None and child.poll() not in (None, 0) and not getattr(child, "reported", False):
            child.reported = True  # the runner's own sentence, once
            self.notify(f"The queue runner stopped: {child.failure()}", title="Queue", severity="error")
        self.jobs = {str(job.id): job for job in message.jobs}
        self._show_studies(message.studies)
        table = self.query_one("#queue-table", DataTable)
        table.display = bool(message.jobs) or not message.studies  # an empty queue gives a study the room
        row = table.cursor_row
        table.clear()
        for job in message.jobs:
            table.add_row(str(job.id), Text(shown(job.state), style=STATE_STYLES.get(job.state, "")),
                          Text(shown(Path(job.run_dir).name if job.run_dir else "-")), Text(shown(f"damaged: {job.damaged}" if job.damaged else job.reason or "-")),
                          Text(shown(job.gpu or "-")), Text(shown(job.sweep or "-")), Text(shown(" ".join(job.args))),
                          key=str(job.id))
        if message.jobs:
            table.move_cursor(row=min(row, len(message.jobs) - 1))
        order = dict.fromkeys([*(job.state for job in message.jobs), *message.counts])  # as they appear in the table
        tally = " · ".join(f"{message.counts[state]:,} {state}" for state in order if state in message.counts) or "no jobs yet"
        if len(message.jobs) < sum(message.counts.values()):
            tally += f" (showing {len(message.jobs):,}: the running, the next pending, the last ended)"
        self._pending = bool(message.counts.get("pending"))
        self.refresh_bindings()  # g and G follow what they can do now (the footer redraws only on a change)
        running = "the queue is running" if self.runner_alive else "the queue is not running here"
        self.query_one("#queue-hint", Static).update(
            f"{tally} · {running} · enter: watch a job's run · a: add the form · g: start · G: stop · "
            f"{shown(self.runs_dir)}/queue.sqlite")

    def _show_studies(self, studies: list) -> None:
        summary, table = self.query_one("#study-summary", Static), self.query_one("#trial-table", DataTable)
        summary.display = table.display = bool(studies)
        summary.update("\n".join(shown(line) for lines, _, _ in studies for line in lines))
        row = table.cursor_row
        table.clear()
        self.trials = {}
        for _, name, rows in studies:
            for trial in rows:
                key = f"{name}#{trial.number}"
                self.trials[key] = trial.run_dir
                state = Text(trial.state, style=STATE_STYLES.get(trial.state, ""))
                number = key if len(studies) > 1 else str(trial.number)  # one study: its name is in the summary
                value = "-" if trial.value is None else f"{trial.value:.2%}" + (" (pruned)" if trial.state == "pruned" else "")
                table.add_row(Text(shown(number)), state, value, Text(shown(trial.note or "-")),
                              Text(shown(trial.params or "-")),
                              Text(shown(Path(trial.run_dir).name if trial.run_dir else "-")), key=key)
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    def _say_what_ended(self, jobs: list) -> None:
        """A line in the app (and the bell for a failure) when a job this screen saw waiting or running ends."""
        before, self._states = self._states, {job.id: job.state for job in jobs}
        if before is None:
            return
        for job in jobs:
            if before.get(job.id) in ("pending", "running") and job.state in ("done", "failed", "stopped"):
                run = Path(job.run_dir).name if job.run_dir else "no run folder"
                why = f": {job.reason}" if job.reason else ""
                failed = job.state == "failed"
                self.notify(escape(shown(f"job {job.id} ({run}) {job.state}{why}")), title="Queue",
                            severity="error" if failed else "information")
                if failed:
                    self.app.bell()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a job or a trial: its run on the dashboard (the watch screen follows its folder)."""
        if event.data_table.id == "trial-table":
            run_dir = self.trials.get(str(event.row_key.value))
            if run_dir:
                self.app.watch_run(Path(run_dir))
            else:
                self.notify("This trial has no run folder yet.", severity="warning")
            return
        job = self.jobs.get(str(event.row_key.value))
        if job is None or not job.run_dir:
            self.notify("This job has no run folder yet.", severity="warning")
            return
        self.app.watch_run(Path(job.run_dir))

    @property
    def runner_alive(self) -> bool:
        return self.runner is not None and self.runner.poll() is None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """g while there are pending jobs and no runner of this app's; G while its runner runs (else dimmed)."""
        if action == "start_queue":
            return True if self._pending and not self.runner_alive else None
        if action == "stop_queue":
            return True if self.runner_alive else None
        return True

    def action_add_job(self) -> None:
        from workbench.core.config import RunConfig
        from workbench.core.experiments.queue import JobQueue, args_for_config
        from workbench.core.training.start import check_start

        try:
            config = RunConfig.from_mapping(self.app.setup_screen.form_values())
            check_start(config)  # what train would refuse at the job's turn is refused now, as queue add does
            JobQueue(self.runs_dir).add([args_for_config(config.absolute())])  # the whole config, paths absolute
        except WorkbenchError as error:
            self.notify(f"Not queued: {error}", severity="error")
            return
        self.notify(escape(shown(f"Queued {config.arch} on {config.dataset} for {config.epochs} epochs.")))
        self._list()

    def action_start_queue(self) -> None:
        if self.runner_alive:
            self.notify("The queue is already running.", severity="warning")
            return
        from workbench import launch

        runs_dir = self.runs_dir.expanduser().resolve()
        self.app.queue_runner_child = launch.start("queue", args=["run", "--runs-dir", str(runs_dir)],
                                                   folder=runs_dir / ".queue", run_id="runner", detach=True)
        self.notify("Queue started: jobs train in processes of their own (r shows their runs).")
        self._list()

    def action_stop_queue(self) -> None:
        if not self.runner_alive:
            self.notify("The queue is not running here.", severity="warning")
            return
        self.runner.send_signal(signal.SIGTERM)
        self.notify("Stopping the queue: running jobs save a checkpoint and go back to the queue.")
