"""MetricsChart: a line chart of named series over epochs (plotext), redrawn a few times a second."""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter

from textual.app import ComposeResult
from textual.widget import Widget
from textual_plotext import PlotextPlot

from workbench.core.events import EpochMetrics, epoch_from_row
from workbench.core.runs import epoch_records

REDRAW_CHECK_S = 0.25  # how often the chart looks for new points
MIN_REDRAW_GAP_S = 1.0  # never rebuild more than once a second
COST_FACTOR = 20  # wait 20x the last rebuild's cost: plotting takes <= ~5% of a core
POINTS_PER_COLUMN = 2  # braille markers resolve two points per terminal column

RGB = tuple[int, int, int]
BEST_COLOUR = (120, 220, 120)  # the best epoch's vertical line


@dataclass
class Series:
    label: str
    color: RGB
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)


class TimedPlot(PlotextPlot):
    """A PlotextPlot that remembers when it may next be rebuilt, from what the last build cost."""

    next_allowed = 0.0

    def render(self):
        started = perf_counter()
        result = super().render()
        finished = perf_counter()
        self.next_allowed = finished + max(MIN_REDRAW_GAP_S, (finished - started) * COST_FACTOR)
        return result


class MetricsChart(Widget):
    """Plots series such as train loss per step sample and test loss per epoch.

    x is in epochs (a step sample inside epoch 3 sits between 2 and 3), so step samples and
    epoch points share one axis. Points may arrive at any rate; the chart redraws on a timer.
    """

    def __init__(
        self,
        title: str,
        series: dict[str, tuple[str, RGB]],
        *,
        y_limits: tuple[float, float] | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.series = {name: Series(label, color) for name, (label, color) in series.items()}
        self.y_limits = y_limits
        self.epochs = 1
        self.mark: float | None = None  # an x to draw a vertical line at (the best epoch)
        self._dirty = True

    def compose(self) -> ComposeResult:
        yield TimedPlot()

    @property
    def legend(self) -> str:
        return " ".join(
            f"[rgb({r},{g},{b})]━[/] {series.label}" for series in self.series.values()
            for r, g, b in [series.color]
        )

    def on_mount(self) -> None:
        self.border_title = self.title
        self.border_subtitle = self.legend
        self._draw()
        self.set_interval(REDRAW_CHECK_S, self._redraw_if_dirty)

    # ---- data in ------------------------------------------------------------------

    def add_point(self, name: str, x: float, y: float) -> None:
        if y != y:  # NaN would blank the whole plot
            return
        series = self.series[name]
        series.xs.append(x)
        series.ys.append(y)
        self._dirty = True

    def set_points(self, name: str, xs: list[float], ys: list[float]) -> None:
        self.series[name].xs = list(xs)
        self.series[name].ys = list(ys)
        self._dirty = True

    def set_epochs(self, epochs: int) -> None:
        self.epochs = max(epochs, 1)
        self._dirty = True

    def clear(self) -> None:
        for series in self.series.values():
            series.xs.clear()
            series.ys.clear()
        self.mark = None
        self._dirty = True

    def set_mark(self, x: float | None) -> None:
        if x != self.mark:
            self.mark = x
            self._dirty = True

    def point_count(self, name: str | None = None) -> int:
        chosen = [self.series[name]] if name else self.series.values()
        return sum(len(series.xs) for series in chosen)

    def redraw_now(self) -> None:
        """Draw at once (tests and screenshots); normally the timer does it."""
        self._draw()

    # ---- drawing ------------------------------------------------------------------

    def _redraw_if_dirty(self) -> None:
        if self._dirty and self.is_on_screen and perf_counter() >= self.query_one(TimedPlot).next_allowed:
            self._draw()

    @property
    def is_on_screen(self) -> bool:
        return self.screen.is_current and self.region.area > 0

    def _draw(self) -> None:
        self._dirty = False
        plot = self.query_one(TimedPlot)
        plt = plot.plt
        plt.clear_data()
        plt.xlim(0, self.epochs)
        plt.xticks(list(range(self.epochs + 1)) if self.epochs <= 10 else None)
        if self.y_limits:
            plt.ylim(*self.y_limits)
        budget = max(self.size.width * POINTS_PER_COLUMN, 16)
        for series in self.series.values():
            if not series.xs:
                continue
            xs, ys = _thin(series.xs, series.ys, budget)
            marker = "braille" if len(xs) > 1 else "dot"
            plt.plot(xs, ys, color=series.color, marker=marker)
        if self.mark is not None:
            plt.vline(self.mark, color=BEST_COLOUR)
        plot.refresh()


def _thin(xs: list[float], ys: list[float], budget: int) -> tuple[list[float], list[float]]:
    """At most about `budget` points: means over equal runs, keeping the last point exact."""
    if len(xs) <= budget:
        return xs, ys
    size = -(-len(xs) // budget)
    thin_x, thin_y = [], []
    for start in range(0, len(xs) - 1, size):
        chunk = slice(start, min(start + size, len(xs) - 1))
        thin_x.append(xs[chunk.stop - 1])
        thin_y.append(sum(ys[chunk]) / (chunk.stop - chunk.start))
    thin_x.append(xs[-1])
    thin_y.append(ys[-1])
    return thin_x, thin_y


SERIES = {  # short labels: the legend sits in the chart's border and must fit at 80 columns
    "steps": ("steps", (110, 125, 165)),
    "train": ("train", (80, 170, 255)),
    "val": ("val", (255, 165, 60)),
    "test": ("test", (235, 90, 160)),
}


class TrainingCharts(Widget):
    """Loss and accuracy of one run, side by side: train per step sample; train, validation
    and test per epoch (test usually only at the end when there is a validation split)."""

    def compose(self) -> ComposeResult:
        yield MetricsChart("loss by epoch", SERIES, id="loss-chart")
        yield MetricsChart("accuracy % by epoch", SERIES, y_limits=(0, 100), id="acc-chart")
        yield MetricsChart("learning rate", {"lr": ("lr", (120, 200, 120))}, id="lr-chart")

    @property
    def loss(self) -> MetricsChart:
        return self.query_one("#loss-chart", MetricsChart)

    @property
    def accuracy(self) -> MetricsChart:
        return self.query_one("#acc-chart", MetricsChart)

    @property
    def lr(self) -> MetricsChart:
        return self.query_one("#lr-chart", MetricsChart)

    def reset(self, epochs: int) -> None:
        for chart in (self.loss, self.accuracy, self.lr):
            chart.clear()
            chart.set_epochs(epochs)

    def add_step(self, x: float, loss: float, acc: float, lr: float | None = None) -> None:
        self.loss.add_point("steps", x, loss)
        self.accuracy.add_point("steps", x, acc * 100)
        if lr is not None:
            self.lr.add_point("lr", x, lr)

    def mark_best(self, epoch: int | None) -> None:
        """A vertical line at the best epoch on the loss and accuracy charts (thinning never hides it)."""
        for chart in (self.loss, self.accuracy):
            chart.set_mark(epoch)
        best = "  [rgb(120,220,120)]┃[/] best" if epoch is not None else ""
        self.accuracy.border_subtitle = self.accuracy.legend + best

    def add_epoch(self, event: EpochMetrics) -> None:
        points = [("train", event.train_loss, event.train_acc), ("val", event.val_loss, event.val_acc),
                  ("test", event.test_loss, event.test_acc)]
        for name, loss, acc in points:
            if acc is not None:
                self.loss.add_point(name, event.epoch, loss)
                self.accuracy.add_point(name, event.epoch, acc * 100)

    def show_records(self, records: list[dict], epochs: int) -> None:
        """Replace everything with a run's metrics.jsonl rows."""
        self.reset(epochs)
        for record in records:
            if record.get("type") == "step" and record.get("steps_per_epoch"):
                x = record["epoch"] - 1 + record["step"] / record["steps_per_epoch"]
                self.add_step(x, record["loss"], record["acc"], record.get("lr"))
        rows = epoch_records(records)
        for record in rows:
            self.add_epoch(epoch_from_row(record))
        self.mark_best(rows[-1].get("best_epoch") if rows else None)

    def redraw_now(self) -> None:
        for chart in (self.loss, self.accuracy, self.lr):
            chart.redraw_now()

    def point_count(self) -> int:
        return self.loss.point_count() + self.accuracy.point_count()
