"""The training aids in the app: the LR finder from the setup screen, the best epoch on the charts."""

from __future__ import annotations

import math
import re

import pytest
from textual.app import App
from textual.widgets._footer import FooterKey

from tests.support.ui import SIZE, asynchronous, models_ready, tiny_config, wait_until
from workbench.core.config import RunConfig
from workbench.ui.app import build_app
from workbench.ui.screens.lr_find import LrFindScreen


@asynchronous
async def test_the_lr_finder_plots_its_curve_and_enter_puts_the_suggestion_in_the_form(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, arch="linear", lr=0.5)
    app = build_app(config, runs_dir=tmp_path / "runs", config_dir=tmp_path / "config", data_dir=data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        app.setup_screen.query_one("#arch-table").focus()
        await pilot.press("l")
        assert await wait_until(pilot, lambda: isinstance(app.screen, LrFindScreen), 20)
        finder = app.screen
        assert await wait_until(pilot, lambda: finder.result is not None, 120), finder.query_one("#lr-find-status").render()
        assert len(finder.lrs) > 10 and finder.suggestion is not None
        status = str(finder.query_one("#lr-find-status").render())
        assert "lowest smoothed loss / 10" in status and "enter" in status
        suggestion = finder.suggestion
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: not isinstance(app.screen, LrFindScreen), 10)
        assert app.setup_screen.query_one("#lr").value == f"{suggestion:.3g}"
    assert list((tmp_path / "runs" / "lr-find").glob("*/lr_find.png"))
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name != "lr-find"]  # no run was started


@asynchronous
async def test_the_charts_mark_the_best_epoch(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, arch="linear", epochs=3)
    app = build_app(config, runs_dir=tmp_path / "runs", config_dir=tmp_path / "config", data_dir=data_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        dashboard = app.dashboard
        assert await wait_until(pilot, lambda: dashboard.outcome is not None, 120)
        best = dashboard.outcome.best_epoch
        assert best is not None and dashboard.charts.accuracy.mark == best == dashboard.charts.loss.mark
        assert "best" in dashboard.charts.accuracy.border_subtitle


def dipping_curve() -> list[tuple[float, float, float]]:
    """(lr, loss, smoothed): a loss that dips near 1e-2 and explodes past 0.1, over seven decades."""
    points, smoothed = [], 2.3
    for i in range(71):
        lr = 1e-7 * 10 ** (i / 10)
        loss = 2.3 - 1.5 * math.exp(-((math.log10(lr) + 2) ** 2)) + 40 * lr ** 2
        smoothed = 0.8 * smoothed + 0.2 * loss
        points.append((lr, loss, smoothed))
    return points


class RecordedCurve(LrFindScreen):
    """The LR finder's screen fed a recorded curve (not a child process), and its result if any."""

    points = dipping_curve()
    finished: dict | None = {"suggestion": 1e-3, "rule": "lowest smoothed loss / 10", "ended": "the loss exploded",
                           "steepest": 3e-3}

    def _run(self, config) -> None:
        from workbench.ui.screens.lr_find import CurveDone, CurvePoint

        for point in self.points:
            self.post_message(CurvePoint(*point))
        if self.finished is not None:  # the test's end: its suggestion and why it stopped
            self.post_message(CurveDone(self.finished))


class CurveHost(App):
    curve = RecordedCurve  # the screen it shows

    def on_mount(self) -> None:
        self.push_screen(self.curve(RunConfig()))


@asynchronous
async def test_the_lr_finder_draws_the_whole_curve_on_log_axes_with_readable_ticks():
    from textual_plotext import PlotextPlot

    app = CurveHost()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        # Its own keys in a footer of its own, not the form's below, which do nothing here.
        assert [(key.key, key.description) for key in app.screen.query(FooterKey)] == [("enter", "Use it"),
                                                                                     ("escape", "Close")]
        plot = app.screen.query_one(PlotextPlot)
        drawn = plot.plt.build()  # twice, as renders do: the same picture each time
        assert drawn == plot.plt.build()
        assert "1e-07" in drawn and "1e+00" in drawn and "0.000000" not in drawn  # decades, written as such
        plain = "".join(ch for ch in drawn if ch.isprintable())  # without its colour codes
        assert all(f"{tick}┤" in plain for tick in ("10", " 5", " 2"))  # more than a decade of loss: log, 1 2 5


class SpikedCurve(RecordedCurve):
    """A run that barely moves (2.3012..2.3108 smoothed), then one step at a loss of 2000; still running."""

    points = [(1e-5 * 1.3 ** i, 2000.0 if i == 29 else 2.31 - 0.0003 * i, 2.3108 - 0.0003 * i) for i in range(30)]
    finished = None


class SpikeHost(CurveHost):
    curve = SpikedCurve


@asynchronous
async def test_one_step_far_above_the_smoothed_curve_does_not_flatten_it_and_ticks_differ():
    from textual_plotext import PlotextPlot

    app = SpikeHost()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        plain = re.sub(r"\x1b\[[0-9;]*m", "", app.screen.query_one(PlotextPlot).plt.build())  # no colour codes
        ticks = re.findall(r"([0-9.]+)┤", plain)
        # The axis spans the smoothed curve, not the spike, and its ticks are five different numbers.
        assert len(ticks) == 5 and len(set(ticks)) == 5, ticks
        assert all(2.30 < float(tick) < 2.32 for tick in ticks), ticks


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
def test_lr_finder_curve_snapshot(snap_compare, size):
    async def ready(pilot):
        await pilot.pause(0.3)

    assert snap_compare(CurveHost(), terminal_size=size, run_before=ready)
