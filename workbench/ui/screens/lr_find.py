"""LrFindScreen: the learning-rate range test for the form's run, plotted live; enter takes the suggestion.

The test runs as `workbench lr-find --json-lines` in a process of its own, like export: it
trains (a throwaway copy), so it must not share torch's global state with a run training here.
"""

from __future__ import annotations

import math

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static
from textual.worker import get_current_worker
from textual_plotext import PlotextPlot

from workbench.core.config import RunConfig
from workbench.ui.widgets.footer import FittedFooter


class CurvePoint(Message):
    def __init__(self, lr: float, loss: float, smoothed: float) -> None:
        super().__init__()
        self.lr, self.loss, self.smoothed = lr, loss, smoothed


class CurveDone(Message):
    def __init__(self, result: dict | None, problem: str = "") -> None:
        super().__init__()
        self.result = result
        self.problem = problem


class LrFindScreen(ModalScreen[float | None]):
    """Dismissed with the suggested learning rate (enter) or None (escape)."""

    BINDINGS = [
        Binding("enter", "use", "Use it", tooltip="Put the suggested learning rate in the form"),
        Binding("escape", "close", "Close", tooltip="Stop the test and leave the form as it is"),
    ]

    def __init__(self, config: RunConfig) -> None:
        super().__init__(id="lr-find")
        self.config = config
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.result: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="lr-find-box"):
            yield Static(f"LR finder: {self.config.arch} on {self.config.dataset}, batch {self.config.batch_size}",
                         id="lr-find-title", markup=False)
            yield PlotextPlot(id="lr-find-plot")
            yield Static("starting the range test (a throwaway copy of the model; the form's run is untouched)…",
                         id="lr-find-status", markup=False)
        yield FittedFooter()  # its own keys: the form's footer below stays drawn and its keys do nothing here

    def on_mount(self) -> None:
        self._draw()
        self._run(self.config)

    @property
    def suggestion(self) -> float | None:
        return self.result.get("suggestion") if self.result else None

    # ---- the test, in a process of its own -------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="lr-find", description="the LR finder")
    def _run(self, config: RunConfig) -> None:
        from workbench import launch

        worker = get_current_worker()

        def point(row: dict) -> None:
            self.post_message(CurvePoint(row["lr"], row["loss"], row["smoothed"]))

        try:
            result = launch.run("lr-find", config=config, on_progress=point, cancelled=lambda: worker.is_cancelled)
        except launch.ChildFailed as failed:
            self.post_message(CurveDone(None, str(failed)))
            return
        if result is not None:
            self.post_message(CurveDone(result))

    def on_curve_point(self, message: CurvePoint) -> None:
        self.lrs.append(message.lr)
        self.losses.append(message.loss)
        self.smoothed.append(message.smoothed)
        self.query_one("#lr-find-status", Static).update(
            f"step {len(self.lrs)}: lr {message.lr:.3g}, loss {message.loss:.4f} (smoothed {message.smoothed:.4f})")
        if len(self.lrs) % 5 == 0:
            self._draw()

    def on_curve_done(self, message: CurveDone) -> None:
        status = self.query_one("#lr-find-status", Static)
        if message.result is None:
            status.update(f"the LR finder failed: {message.problem} (escape closes)")
            return
        self.result = message.result
        self._draw()
        if self.suggestion is None:
            status.update(f"no suggestion ({self.result['rule']}); {self.result['ended']} · escape closes")
            return
        bolder = self.result.get("steepest")
        also = f" · bolder: {bolder:.3g} (steepest descent)" if bolder else ""
        status.update(
            f"suggested lr {self.suggestion:.3g}: {self.result['rule']}{also} · {self.result['ended']} · "
            "enter: use it, escape: keep the form's"
        )

    def _draw(self) -> None:
        """The smoothed curve whole, the per-step losses within its range (a step above it sits on
        the top edge: one step at a loss of 2000 squeezed the dip the suggestion reads from into a
        flat line), on a log loss axis when that spans more than a decade, with ticks written as
        numbers a reader can use (1e-05, not 0.000010). The logarithms are taken here: plotext's
        own log axes take them again at every render."""
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.title("loss by learning rate: grey per step, blue smoothed, green the suggestion")
        points = [(lr, raw, smooth) for lr, raw, smooth in zip(self.lrs, self.losses, self.smoothed)
                  if lr > 0 and math.isfinite(raw) and math.isfinite(smooth)]
        if points:
            xs = [math.log10(lr) for lr, _, _ in points]
            low = min(min(raw, smooth) for _, raw, smooth in points)
            high = max(smooth for _, _, smooth in points)
            plt.xticks(*_decades(min(xs), max(xs)))
            plt.xlim(min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1)
            log_y = low > 0 and high / low > 10
            y_of = (lambda v: math.log10(v)) if log_y else (lambda v: v)  # noqa: E731
            if log_y:
                plt.yticks(*_one_two_five(low, high))
                plt.ylim(y_of(low) - 0.05, y_of(high) + 0.05)
            else:
                pad = max(high - low, 1e-3) * 0.08
                ticks = [low + (high - low) * i / 4 for i in range(5)]
                plt.yticks(ticks, _distinct_labels(ticks))
                plt.ylim(low - pad, high + pad)
            plt.plot(xs, [y_of(min(raw, high)) for _, raw, _ in points], color=(150, 150, 150), marker="braille")
            plt.plot(xs, [y_of(smooth) for _, _, smooth in points], color=(80, 170, 255), marker="braille")
            if self.suggestion is not None:
                plt.vline(math.log10(self.suggestion), color=(60, 200, 80))
        plot.refresh()

    # ---- answers -----------------------------------------------------------------------

    def action_use(self) -> None:
        if self.suggestion is None:
            self.notify("No suggestion yet: the test is still running (escape stops it).", severity="warning")
            return
        self.dismiss(self.suggestion)

    def action_close(self) -> None:
        self.workers.cancel_group(self, "lr-find")  # the child is stopped when the worker sees it
        self.dismiss(None)


def _decades(low: float, high: float) -> tuple[list[float], list[str]]:
    """Ticks at whole powers of ten between two log10 values (every other one on a long axis,
    so labels never touch), written as 1e-05."""
    first, last = math.floor(low), math.ceil(high)
    step = 2 if last - first > 8 else 1
    ticks = [float(k) for k in range(first - first % step, last + 1, step)]
    return ticks, [f"{10.0 ** k:.0e}" for k in ticks]


def _distinct_labels(ticks: list[float]) -> list[str]:
    """Ticks written with the fewest significant digits (3 at least) that tell them apart: a
    curve that has barely moved spans 2.3012..2.3108, which 3 digits wrote as 2.3, 2.3, 2.3."""
    for digits in range(3, 9):
        labels = [f"{tick:.{digits}g}" for tick in ticks]
        if len(set(labels)) == len(labels):
            break
    return labels


def _one_two_five(low: float, high: float) -> tuple[list[float], list[str]]:
    """Loss ticks on a log axis at 1, 2 and 5 of each decade within [low, high], written plainly (2, 5, 10, 20)."""
    ticks = []
    for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for step in (1, 2, 5):
            value = step * 10.0 ** k
            if low <= value <= high:
                ticks.append(value)
    return [math.log10(tick) for tick in ticks], [f"{tick:g}" for tick in ticks]
