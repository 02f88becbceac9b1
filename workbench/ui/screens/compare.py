"""CompareScreen: the runs chosen in the runs list side by side, with overlaid curves.

The table holds only the settings that differ (the rest on one "same for all" line), best and
final test accuracy, best epoch, time and images/s; selecting a column header sorts by it.
Each run keeps one colour in the table and in both charts, named in the legend.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static
from textual_plotext import PlotextPlot

from workbench.core.shown import shown
from workbench.ui.widgets.footer import FittedFooter

RUN_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red", "orange", "white")


class Compared(Message):
    def __init__(self, comparison, study_lines: list[str] | None = None) -> None:
        super().__init__()
        self.comparison = comparison
        self.study_lines = study_lines or []  # when the runs are the trials of one search study


class CompareScreen(Screen):
    TITLE = "workbench"
    SUB_TITLE = "compare"

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.run_dirs = [Path(p) for p in run_dirs]
        self.comparison = None
        self.colours: dict[str, str] = {}
        self.sorted_by = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(cursor_type="row", zebra_stripes=True, id="compare-table")
        yield Static("reading the runs…", id="compare-same", markup=False)
        yield Static("", id="compare-study", markup=False)
        with Horizontal(id="compare-charts"):
            yield PlotextPlot(id="compare-acc")
            yield PlotextPlot(id="compare-loss")
        yield FittedFooter()

    def on_mount(self) -> None:
        self.query_one("#compare-acc").border_title = "held-out accuracy % by epoch"
        self.query_one("#compare-loss").border_title = "train loss by epoch"
        self.query_one(DataTable).focus()
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare", description="comparing runs")
    def _load(self) -> None:
        from workbench.core.experiments.compare import compare
        from workbench.core.experiments.search.results import study_of_runs, summary_lines

        comparison = compare(self.run_dirs)
        search = study_of_runs(self.run_dirs)
        self.post_message(Compared(comparison, summary_lines(search) if search is not None else []))

    def on_compared(self, message: Compared) -> None:
        self.comparison = message.comparison
        study = self.query_one("#compare-study", Static)
        study.update("\n".join(shown(line) for line in message.study_lines))
        study.display = bool(message.study_lines)
        # One colour per run, fixed by the order the runs were chosen in, whatever the sort.
        self.colours = {run.name: RUN_COLOURS[i % len(RUN_COLOURS)] for i, run in enumerate(self.comparison.runs)}
        self._show(list(self.comparison.runs))
        self._plot()

    def _show(self, figures: list) -> None:
        from workbench.core.experiments.compare import METRIC_COLUMNS, format_setting, same_line

        result = self.comparison
        table = self.query_one(DataTable)
        table.clear(columns=True)
        # The run and its result first, then what differs: at 80 columns the figures that matter
        # are on screen without scrolling, and the run's name stays as the table scrolls right.
        leading = ("best val", "best test")
        trailing = tuple(column for column in METRIC_COLUMNS if column not in leading)  # status, best epoch, ...
        table.add_column("run", key="run")
        for column in leading:
            table.add_column(column, key=column)
        for key in result.differ:
            table.add_column(Text(shown(key.replace("_", " "))), key=key)
        for column in trailing:
            table.add_column(column, key=column)
        table.fixed_columns = 1
        for run in figures:
            name = Text("● ", style=self.colours[run.name]) + Text(shown(run.name))
            if run.problem:
                name += Text(shown(f"  ! {run.problem}"), style="yellow")
            table.add_row(
                name, _cell(run.best_val_acc, "{:.2%}"), _cell(run.best_test_acc, "{:.2%}"),
                *(Text(shown(format_setting(run.settings.get(key, "?")))) for key in result.differ),
                Text(shown(run.status)), _cell(run.best_epoch, "{}"), _cell(run.final_test_acc, "{:.2%}"),
                _cell(run.time_s, "{:.1f} s"), _cell(run.images_per_s, "{:,.0f}"), key=str(run.path),
            )
        sorted_note = f"sorted by {self.sorted_by} · " if self.sorted_by else ""
        self.query_one("#compare-same", Static).update(
            shown(f"{sorted_note}select a column header to sort · {same_line(result)}"))

    def _plot(self) -> None:
        for widget_id, curve, scale in (("#compare-acc", "held-out acc", 100.0), ("#compare-loss", "train loss", 1.0)):
            plot = self.query_one(widget_id, PlotextPlot)
            plt = plot.plt
            plt.clear_data()
            plt.clear_figure()
            # No legend: each run's ● in the table has its curve's colour, and a legend covered the
            # curves' start. A run of one epoch is a marker a braille dot would hide.
            for run in self.comparison.runs:
                points = run.curves.get(curve, [])
                if points:
                    plt.plot([x for x, _ in points], [y * scale for _, y in points],
                             color=self.colours[run.name], marker="braille" if len(points) > 1 else "●")
            plot.refresh()

    @on(DataTable.HeaderSelected, "#compare-table")
    def _sort(self, event: DataTable.HeaderSelected) -> None:
        from workbench.core.experiments.compare import sort_runs

        if self.comparison is None:
            return
        column = str(event.column_key.value)
        self.sorted_by = column.replace("_", " ")
        self._show(sort_runs(list(self.comparison.runs), column, self.comparison.differ))


def _cell(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)
