"""RunsScreen and RunScreen: past runs in a table, and one run's charts read from metrics.jsonl."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.markup import escape
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from workbench.core.events import from_row
from workbench.core.lifecycle.view import RunView
from workbench.core.shown import shown
from workbench.core.wording import count as counted
from workbench.ui import formatting as fmt
from workbench.ui.widgets.charts import TrainingCharts
from workbench.ui.widgets.class_table import ClassAccuracy
from workbench.ui.widgets.footer import FittedFooter

STATUS_STYLES = {"finished": "green", "running": "cyan", "stopped": "yellow", "pruned": "yellow", "failed": "red",
                 "interrupted": "magenta"}


class RunsListed(Message):
    def __init__(self, summaries: list[Any]) -> None:
        super().__init__()
        self.summaries = summaries


class RunsScreen(Screen):
    """Every run in the runs folder, newest first; enter opens one."""

    TITLE = "workbench"
    SUB_TITLE = "runs"
    BINDINGS = [
        Binding("space", "select_run", "Select", tooltip="Select runs to compare"),
        Binding("c", "compare", "Compare", tooltip="Compare the selected runs (or all, when none is)"),
        Binding("u", "queue", "Queue", tooltip="The job queue of this runs folder"),
        Binding("t", "train_on", "Train on", tooltip="Resume the run from its checkpoint (a finished one to more epochs)"),
    ]

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.summaries: list[Any] = []
        self.selected: list[str] = []  # run paths, in the order they were chosen (their colours follow it)

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(cursor_type="row", zebra_stripes=True, id="runs-table")
        yield Static("", id="runs-hint", markup=False)
        yield FittedFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        # The columns a narrow terminal must not lose come first: which run, how it ended, how good.
        for label in ("run", "status", "best", "epochs", "arch", "lr", "data set", "started"):
            table.add_column(label, key=label)
        table.border_title = escape(shown(f"runs in {fmt.short_path(self.runs_dir)}/"))
        table.focus()
        self._list()

    def on_screen_resume(self) -> None:
        self._list()

    @property
    def current_run(self) -> Path | None:
        tables = self.query(DataTable)  # none while the screen is still being built or torn down
        if not tables or not tables.first().row_count:
            return None
        table = tables.first()
        return Path(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs", description="listing runs")
    def _list(self) -> None:
        from workbench.core.runs import list_runs

        self.post_message(RunsListed(list_runs(self.runs_dir)))

    def on_runs_listed(self, message: RunsListed) -> None:
        table = self.query_one(DataTable)
        keep = self.current_run
        self.summaries = message.summaries
        table.clear()
        for summary in message.summaries:
            started = summary.started.strftime("%Y-%m-%d %H:%M") if summary.started else "-"
            table.add_row(
                self._name_cell(summary), Text(shown(summary.status), style=STATUS_STYLES.get(summary.status, "")),
                Text(_best(summary), justify="right"), f"{summary.epochs_done}/{summary.epochs}",
                Text(shown(summary.arch)), Text("-" if summary.lr is None else f"{summary.lr:g}", justify="right"),
                Text(shown(_short_dataset(summary.dataset))), started,
                key=str(summary.path),
            )
        keys = [str(s.path) for s in message.summaries]
        if keep is not None and str(keep) in keys:
            table.move_cursor(row=keys.index(str(keep)))
        hint = "enter: charts · space: select · c: compare · u: queue · e: export · i: images" if message.summaries else (
            f"no runs in {shown(fmt.short_path(self.runs_dir))} yet: escape, then s starts one"
        )
        self.query_one("#runs-hint", Static).update(hint)
        self.app.refresh_bindings()

    @on(DataTable.RowSelected, "#runs-table")
    def _open(self, event: DataTable.RowSelected) -> None:
        path = Path(str(event.row_key.value))
        summary = next((s for s in self.summaries if s.path == path), None)
        own = getattr(self.app, "dashboard", None)
        if summary is not None and summary.status == "running" and not (own is not None and own.run_dir == path):
            self.app.watch_run(path)  # another process trains it: follow it live
            return
        self.app.push_screen(RunScreen(path))

    def _name_cell(self, summary) -> Text:
        chosen = str(summary.path) in self.selected
        return Text(("● " if chosen else "  ") + shown(summary.name), style="bold" if chosen else "")

    def action_select_run(self) -> None:
        run = self.current_run
        if run is None:
            return
        key = str(run)
        self.selected.remove(key) if key in self.selected else self.selected.append(key)
        summary = next(s for s in self.summaries if str(s.path) == key)
        self.query_one(DataTable).update_cell(key, "run", self._name_cell(summary))
        self.query_one(DataTable).action_cursor_down()

    def action_compare(self) -> None:
        from workbench.ui.screens.compare import CompareScreen

        chosen = [Path(p) for p in self.selected if any(str(s.path) == p for s in self.summaries)]
        chosen = chosen or [s.path for s in self.summaries]
        if not chosen:
            self.notify("No runs to compare yet.", severity="warning")
            return
        self.app.push_screen(CompareScreen(chosen))

    def action_train_on(self) -> None:
        """Resume the highlighted run here: a stopped or failed run to its target, a finished or pruned
        one to a larger one the user gives."""
        from workbench.ui.screens.modals import TrainOnQuestion

        summary = next((s for s in self.summaries if s.path == self.current_run), None)
        if summary is None:
            return
        if self.app.training:
            self.notify("A run is training in this app; train this one on when it ends.", severity="warning")
            return
        if summary.status == "running":
            self.notify("Another process trains this run now (enter follows it).", severity="warning")
            return
        if not any((summary.path / "checkpoints").glob("last*.pt")):
            self.notify("This run has no checkpoint to go on from.", severity="warning")
            return
        more = summary.epochs_done >= summary.epochs
        target = summary.epochs * 2 if more else summary.epochs

        def answered(epochs: int | None) -> None:
            if epochs is not None:
                self.app.train_on(summary.path, epochs)

        self.app.push_screen(TrainOnQuestion(summary.name, summary.status, summary.epochs_done, target), answered)

    def action_queue(self) -> None:
        from workbench.ui.screens.queue import QueueScreen

        self.app.push_screen(QueueScreen(self.runs_dir))

    @on(DataTable.RowHighlighted, "#runs-table")
    def _moved(self) -> None:
        self.app.refresh_bindings()


@dataclass(frozen=True)
class RunDetails:
    records: list[dict[str, Any]]
    epochs: int
    summary: str


class RunLoaded(Message):
    def __init__(self, details: RunDetails) -> None:
        super().__init__()
        self.details = details


class RunScreen(Screen):
    """One past run: its settings, loss and accuracy charts, and last per-class accuracy."""

    TITLE = "workbench"

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.sub_title = escape(shown(run_dir.name))

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("reading the run…", id="run-summary", markup=False)
        yield TrainingCharts(id="charts")
        with Horizontal(id="run-bottom"):
            yield DataTable(cursor_type="row", zebra_stripes=True, id="epochs")
            yield ClassAccuracy(id="classes")
        yield FittedFooter()

    def on_mount(self) -> None:
        self.query_one(ClassAccuracy).border_title = "per class (last evaluation)"
        epochs = self.query_one("#epochs", DataTable)
        epochs.border_title = "epochs"
        epochs.add_columns("epoch", "train loss", "train acc", "val loss", "val acc", "test loss", "test acc", "time")
        epochs.focus()
        self._load(self.run_dir)

    @property
    def current_run(self) -> Path | None:
        return self.run_dir

    def reload(self) -> None:
        self._load(self.run_dir)

    @work(thread=True, exclusive=True, exit_on_error=False, group="run", description="reading the run")
    def _load(self, run_dir: Path) -> None:
        self.post_message(RunLoaded(read_run_details(run_dir)))

    def on_run_loaded(self, message: RunLoaded) -> None:
        details = message.details
        self.query_one("#run-summary", Static).update(details.summary)
        view = RunView.of(event for row in details.records if (event := from_row(row, self.run_dir)) is not None)
        view.epochs = max(view.epochs, details.epochs)  # the target, for a run stopped before its end
        self.query_one(TrainingCharts).show(view)
        epochs = [r for r in details.records if r.get("type") == "epoch"]
        table = self.query_one("#epochs", DataTable)
        table.clear()
        for r in epochs:
            table.add_row(
                str(r["epoch"]), _number(r.get("train_loss")), fmt.percent(r.get("train_acc")),
                _number(r.get("val_loss")), fmt.percent(r.get("val_acc")),
                _number(r.get("test_loss")), fmt.percent(r.get("test_acc")), fmt.duration(r.get("epoch_s")),
            )
        evaluated = [r for r in epochs if r.get("per_class_acc")]
        if evaluated:
            last = evaluated[-1]
            classes = self.query_one(ClassAccuracy)
            classes.show(last["per_class_acc"], last.get("per_class_precision"), last.get("per_class_f1"))
            split = fmt.SPLITS.get(last.get("per_class_split") or "test", "test")
            classes.border_title = escape(shown(f"per class · {split} · epoch {last['epoch']}"))


def read_run_details(run_dir: Path) -> RunDetails:
    """Everything the run screen shows, read from the run folder (thread side)."""
    from workbench.core import runs
    from workbench.core.errors import WorkbenchError

    records = runs.read_metrics(run_dir)
    status, reason = runs.read_status(run_dir)
    if status == "running" and runs.is_interrupted(run_dir):
        status = "interrupted"
    try:
        config = runs.read_config(run_dir)
        settings = (
            f"{config.arch} on {config.dataset} · {counted(config.epochs, 'epoch')} · batch {config.batch_size} · "
            f"{config.optimizer} lr {config.lr} · {config.schedule} · augment {','.join(config.augment) or 'none'}"
        )
        epochs = config.epochs
    except WorkbenchError as error:
        settings, epochs = f"config unreadable: {error}", 1
    epoch_rows = runs.epoch_records(records)
    best, split, best_epoch = runs.best_of(epoch_rows)
    outcome = f"{status}" + (f" ({reason})" if reason else "")
    best_text = f"best {fmt.SPLITS[split]} {fmt.percent(best)} (epoch {best_epoch})" if split else "not evaluated yet"
    done = max((r["epoch"] for r in epoch_rows), default=0)
    summary = f"{shown(settings)}\n{shown(outcome)} · {done}/{counted(max(epochs, done), 'epoch')} · {best_text}"
    from workbench.core.export.loading import export_line

    if export := export_line(run_dir):
        summary += f"\n{shown(export)}"
    return RunDetails(records, max(epochs, done), summary)


def _best(summary) -> str:
    if summary.best_acc is None:
        return "-"
    where = f" @{summary.best_epoch}" if summary.best_split == "val" and summary.best_epoch else ""
    return f"{fmt.percent(summary.best_acc)} {'val' if summary.best_split == 'val' else 'test'}{where}"


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _short_dataset(dataset: str) -> str:
    return dataset if len(dataset) <= 24 else "…" + dataset[-23:]
