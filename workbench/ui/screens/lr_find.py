"""LrFindScreen: the learning-rate range test for the form's run, plotted live; enter takes the suggestion.

The test runs as `workbench lr-find --json-lines` in a process of its own, like export: it
trains (a throwaway copy), so it must not share torch's global state with a run training here.
"""

from __future__ import annotations

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
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.title("loss by learning rate (grey: per step, blue: smoothed; green: suggested)")
        plt.xscale("log" if self.lrs else "linear")  # plotext's log axis needs data to place its ticks
        if self.lrs:
            # The axis spans the smoothed curve (its minimum to its start), never less than a few
            # percent of the loss; points beyond are drawn at the frame, as plotext does not clip.
            low, first = min(self.smoothed), self.smoothed[0]
            span = max(first - low, 0.05 * abs(first), 1e-3)
            bottom, top = low - 0.1 * span, first + 0.3 * span
            raw = [min(max(loss, bottom), top) for loss in self.losses]
            smooth = [min(max(loss, bottom), top) for loss in self.smoothed]
            plt.ylim(bottom, top)
            plt.plot(self.lrs, raw, color=(150, 150, 150), marker="braille")
            plt.plot(self.lrs, smooth, color=(80, 170, 255), marker="braille")
        if self.suggestion is not None:
            plt.vline(self.suggestion, color=(60, 200, 80))
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
