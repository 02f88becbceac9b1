"""Snapshot tests of each screen, made deterministic: recorded events, generated PNGs, fixed names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.recorded import RUN_NAME, recorded_events, write_recorded_run
from tests.support.ui import app_in, models_ready, settle, wait_until, write_test_pngs
from workbench.ui.screens.images import ImagesScreen

# ---- setup ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
def test_setup_screen(snap_compare, in_tmp, size):
    async def ready(pilot):
        assert await wait_until(pilot, lambda: models_ready(pilot.app), 60)
        await settle(pilot)

    assert snap_compare(app_in(in_tmp), terminal_size=size, run_before=ready)


def test_setup_screen_marks_a_bad_value(snap_compare, in_tmp):
    async def bad_lr(pilot):
        assert await wait_until(pilot, lambda: models_ready(pilot.app), 60)
        screen = pilot.app.setup_screen
        screen.query_one("#lr").value = "-1"
        screen.query_one("#batch_size").value = "lots"
        screen.query_one("#arch-table").focus()
        assert await wait_until(pilot, lambda: len(screen.errors) == 2, 10)
        await settle(pilot)

    assert snap_compare(app_in(in_tmp), terminal_size=(100, 30), run_before=bad_lr)


# ---- dashboard -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
def test_dashboard_after_a_finished_run(snap_compare, in_tmp, size):
    async def replay(pilot):
        app = pilot.app
        await app.push_screen("dashboard")
        app.dashboard.show(recorded_events(Path("runs") / RUN_NAME))
        app.dashboard.charts.redraw_now()
        await settle(pilot)

    assert snap_compare(app_in(in_tmp), terminal_size=size, run_before=replay)


def test_dashboard_at_80x24_swaps_in_the_panels_it_hides(snap_compare, in_tmp):
    async def replay(pilot):
        app = pilot.app
        await app.push_screen("dashboard")
        app.dashboard.show(recorded_events(Path("runs") / RUN_NAME))
        await pilot.press("o")  # the lr chart and the per-class table, in place of the loss chart and the log
        app.dashboard.charts.redraw_now()
        await settle(pilot)
        assert app.dashboard.query_one("#classes").display and app.dashboard.query_one("#lr-chart").display

    assert snap_compare(app_in(in_tmp), terminal_size=(80, 24), run_before=replay)


# ---- images, runs and the small-terminal notice ---------------------------------------------


def test_images_screen(snap_compare, in_tmp):
    run_dir = Path("runs") / "20250101-120000-linear"
    write_test_pngs(run_dir)

    async def show(pilot):
        await pilot.app.push_screen(ImagesScreen(run_dir, Path("runs")))
        screen = pilot.app.screen
        assert await wait_until(pilot, lambda: len(screen.files) == 3, 10)
        await pilot.press("down", "down")
        preview = screen.query_one("#preview")
        assert await wait_until(pilot, lambda: preview.image is not None and preview.image.path.name == "gradient.png", 10)
        await settle(pilot)

    assert snap_compare(app_in(in_tmp), terminal_size=(100, 30), run_before=show)


def test_runs_screen_and_a_run(snap_compare, in_tmp):
    write_recorded_run(Path("runs"))

    async def open_run(pilot):
        await pilot.press("r")
        assert await wait_until(pilot, lambda: getattr(pilot.app.screen, "summaries", None), 20)
        await pilot.press("enter")
        assert await wait_until(
            pilot, lambda: pilot.app.screen.query("#charts") and pilot.app.screen.query_one("#charts").point_count() > 0, 20
        )
        pilot.app.screen.query_one("#charts").redraw_now()
        await settle(pilot)

    assert snap_compare(app_in(in_tmp), terminal_size=(100, 32), run_before=open_run)


def test_too_small_notice(snap_compare, in_tmp):
    assert snap_compare(app_in(in_tmp), terminal_size=(40, 12), run_before=settle)
