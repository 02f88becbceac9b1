"""The training aids in the app: the LR finder from the setup screen, the best epoch on the charts."""

from __future__ import annotations

from tests.support.ui import SIZE, asynchronous, models_ready, tiny_config, wait_until
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
