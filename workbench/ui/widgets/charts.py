"""TrainingCharts: loss, accuracy and learning rate of one run, drawn from its RunView (plotext).

The charts hold no data of their own: they draw the view's curves, on a timer, when the view
changed (its version), at most once a second and at most ~5% of a core. x is in epochs with
ticks for any length of run; y ticks are in a compact notation (0.003, 1e-07, never
0.002999910); the best epoch is a vertical line.
"""

from __future__ import annotations

import math
from time import perf_counter

from textual.app import ComposeResult
from textual.widget import Widget
from textual_plotext import PlotextPlot

from workbench.core.lifecycle.view import Curve, RunView

REDRAW_CHECK_S = 0.25  # how often the chart looks for new points
MIN_REDRAW_GAP_S = 2.0  # never rebuild more often: training shares the cores with drawing
COST_FACTOR = 60  # wait 60x the last rebuild's cost: each chart takes <= ~1.7% of a core
POINTS_PER_COLUMN = 2  # braille markers resolve two points per terminal column
COLUMNS_PER_X_TICK = 6  # room for a label like "250" and the gap to the next

X_MARGIN = 0.03  # of the x range, right of the last epoch
RGB = tuple[int, int, int]
BEST_COLOUR = (120, 220, 120)  # the best epoch's vertical line


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
    """Named curves over epochs; which curves, and their data, come from the view."""

    def __init__(self, title: str, series: dict[str, tuple[str, RGB]], *, y_limits: tuple[float, float] | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.series = series  # name -> (label, colour)
        self.curves: dict[str, Curve] = {name: Curve() for name in series}
        self.y_limits = y_limits
        self.epochs = 1
        self.mark: float | None = None  # an x to draw a vertical line at (the best epoch)
        self._drawn_version = -1
        self.version = 0

    def compose(self) -> ComposeResult:
        yield TimedPlot()

    @property
    def legend(self) -> str:
        return " ".join(f"[rgb({r},{g},{b})]━[/] {label}" for label, (r, g, b) in self.series.values())

    def on_mount(self) -> None:
        self.border_title = self.title
        self.border_subtitle = self.legend
        self._draw()
        self.set_interval(REDRAW_CHECK_S, self._redraw_if_dirty)

    def show(self, curves: dict[str, Curve], epochs: int, mark: float | None, version: int) -> None:
        """Draw these curves (shared with the view, not copied) next time the timer allows."""
        self.curves, self.epochs, self.mark, self.version = curves, max(int(epochs or 1), 1), mark, version

    def point_count(self, name: str | None = None) -> int:
        chosen = [self.curves[name]] if name else self.curves.values()
        return sum(len(curve.xs) for curve in chosen)

    def redraw_now(self) -> None:
        """Draw at once (tests and screenshots); normally the timer does it."""
        self._draw()

    def _redraw_if_dirty(self) -> None:
        if (self.version != self._drawn_version and self.is_on_screen
                and perf_counter() >= self.query_one(TimedPlot).next_allowed):
            self._draw()

    @property
    def is_on_screen(self) -> bool:
        return self.screen.is_current and self.region.area > 0

    def _draw(self) -> None:
        self._drawn_version = self.version
        plot = self.query_one(TimedPlot)
        plt = plot.plt
        plt.clear_data()
        plt.xlim(0, self.epochs * (1 + X_MARGIN))  # a little room, so a mark at the last epoch is not the frame
        ticks = epoch_ticks(self.epochs, max(self.size.width // COLUMNS_PER_X_TICK, 2))
        plt.xticks(ticks, [str(t) for t in ticks])
        budget = max(self.size.width * POINTS_PER_COLUMN, 16)
        shown = [(self.series[name][1], *_thin(curve.xs, curve.ys, budget))
                 for name, curve in self.curves.items() if name in self.series and curve.xs]
        low, high = self.y_limits or _span([y for _, _, ys in shown for y in ys])
        plt.ylim(low, high)
        values = nice_ticks(low, high, max(self.size.height // 3, 2))
        plt.yticks(values, compact_labels(values))
        for color, xs, ys in shown:
            plt.plot(xs, ys, color=color, marker="braille" if len(xs) > 1 else "dot")
        if self.mark is not None:
            plt.vline(self.mark, color=BEST_COLOUR)
        plot.refresh()


def epoch_ticks(epochs: int, most: int) -> list[int]:
    """Whole epochs from 0 to `epochs`, at most `most` + 1 of them, evenly spaced when a step up to
    a round one divides the run (0 3 6 9 12), else at the round step with the last always shown."""
    step = max(1, _round_step(epochs / max(most, 1), whole=True))
    even = next((s for s in range(1, step + 1) if epochs % s == 0 and epochs // s <= max(most, 1)), None)
    if even is not None:
        return list(range(0, epochs + 1, even))
    ticks = list(range(0, epochs + 1, step))
    if ticks[-1] != epochs:
        if epochs - ticks[-1] < step / 2:
            ticks.pop()
        ticks.append(epochs)
    return ticks


def nice_ticks(low: float, high: float, most: int) -> list[float]:
    """Values at a round step (1, 2 or 5 x 10^k) inside [low, high], at most `most` + 1 of them."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    step = _round_step((high - low) / max(most, 1))
    first = math.ceil(low / step - 1e-9)
    values = []
    k = first
    while k * step <= high + step * 1e-9:
        values.append(k * step)
        k += 1
    return values or [low]


def compact_labels(values: list[float]) -> list[str]:
    """Labels as short as the ticks' step allows: 0.003, 250, 1e-07; never 0.002999910."""
    if len(values) < 2:
        return [_compact(value, 3) for value in values]
    step = min(abs(b - a) for a, b in zip(values, values[1:])) or 1.0
    biggest = max(abs(value) for value in values)
    if biggest >= 1e5 or biggest < 1e-3:  # powers of ten: mantissa digits enough to tell the step
        digits = max(1, math.floor(math.log10(biggest)) - math.floor(math.log10(step)) + 1)
        return [_compact(value, digits) for value in values]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [_fixed(value, decimals) for value in values]


def _fixed(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _compact(value: float, digits: int) -> str:
    if abs(value) < 1e-30:
        return "0"
    return f"{value:.{digits}g}"


def _round_step(raw: float, whole: bool = False) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            step = factor * power
            return max(1, round(step)) if whole else step
    return 10 * power  # pragma: no cover - the loop always returns


def _span(values: list[float]) -> tuple[float, float]:
    """A y range around the values with a little air; a flat line gets a band around it."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if high - low < 1e-12 * max(abs(high), 1e-30):
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return (0.0 if low >= 0 and low - pad < 0 else low - pad), high + pad


def _thin(xs: list[float], ys: list[float], budget: int) -> tuple[list[float], list[float]]:
    """At most about `budget` points: means over equal runs, keeping the last point exact."""
    if len(xs) <= budget:
        return list(xs), list(ys)
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

    def show(self, view: RunView) -> None:
        """Draw the view (its curves are shared, so later points show without another call,
        as long as `version` moves on: call this after each batch of rows)."""
        best = view.best[1] if view.best else None
        epochs = max(view.epochs, view.epoch, 1)
        self.loss.show(view.loss, epochs, best, view.version)
        self.accuracy.show(view.accuracy, epochs, best, view.version)
        self.lr.show({"lr": view.lr_curve}, epochs, None, view.version)
        mark = " [rgb(120,220,120)]┃[/]best" if best is not None else ""
        for chart in (self.accuracy, self.loss):
            if chart.border_subtitle != chart.legend + mark:  # a border change repaints the chart: only when it moves
                chart.border_subtitle = chart.legend + mark

    def redraw_now(self) -> None:
        for chart in (self.loss, self.accuracy, self.lr):
            chart.redraw_now()

    def point_count(self) -> int:
        return self.loss.point_count() + self.accuracy.point_count()
