"""A new user's first hour in the app: export while training, folders, focus, the dashboard, wording."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_ui import SIZE, asynchronous, models_ready, record_notifications, tiny_config, wait_until
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.events import EpochMetrics, Finished
from workbench.core.training.engine import fit
from workbench.ui.app import build_app
from workbench.ui.screens.modals import Question
from workbench.ui.screens.runs import RunsScreen
from workbench.ui.screens.setup import SetupScreen


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def app_for(tmp_path, data_dir, config=None, runs_dir=None):
    return build_app(config, runs_dir=runs_dir, config_dir=tmp_path / "config", data_dir=data_dir)


# ---- 1. export while training never disturbs the run ----------------------------------------


@asynchronous
async def test_export_during_training_leaves_the_run_as_it_would_have_been(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, arch="basic_cnn", epochs=3, batch_size=64, optimizer="adamw")
    app = app_for(tmp_path, data_dir, config, runs_dir=tmp_path / "runs")
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        dashboard = app.dashboard
        assert await wait_until(pilot, lambda: dashboard.charts.accuracy.point_count("val") >= 1, 120)
        await pilot.press("e")  # epoch 2 is training now
        assert await wait_until(pilot, lambda: any("exported to" in note for note in notes), 120), notes
        assert await wait_until(pilot, lambda: dashboard.outcome is not None, 180)
        assert isinstance(dashboard.outcome, Finished) and dashboard.outcome.status == "finished", dashboard.outcome
    (run_dir,) = (tmp_path / "runs").iterdir()
    alone = fit(config.replace(runs_dir=str(tmp_path / "alone")), lambda event: None)
    trained = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    reference = ckpt.load_checkpoint(alone / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(trained[name], reference[name]) for name in reference)


# ---- 2. a runs folder given once is not remembered ------------------------------------------


@asynchronous
async def test_the_runs_folder_is_a_visible_field_and_never_carried_to_the_next_launch(tmp_path, data_dir):
    elsewhere = tmp_path / "elsewhere"
    first = app_for(tmp_path, data_dir, tiny_config(tmp_path, data_dir, runs_dir=str(elsewhere)), runs_dir=elsewhere)
    async with first.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(first))
        assert first.setup_screen.query_one("#runs_dir").value == str(elsewhere)
        await pilot.press("s")
        assert await wait_until(pilot, lambda: first.dashboard.outcome is not None, 120)
    assert len(list(elsewhere.iterdir())) == 1
    assert str(elsewhere) not in (tmp_path / "config" / "last.toml").read_text()

    second = app_for(tmp_path, data_dir)  # a plain `workbench` later
    async with second.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(second))
        field = second.setup_screen.query_one("#runs_dir")
        assert field.value == "runs" and second.runs_dir == Path("runs")
        field.value = str(tmp_path / "typed")
        await pilot.pause()
        assert second.runs_dir == tmp_path / "typed"  # the runs list follows what the form says


# ---- 6. export asks first when nothing was evaluated ------------------------------------------


@asynchronous
async def test_export_of_a_run_that_was_never_evaluated_asks_first(tmp_path, data_dir):
    # basic_cnn at batch 16: an epoch lasts long enough that x always lands before the first evaluation
    config = tiny_config(tmp_path, data_dir, arch="basic_cnn", epochs=5, batch_size=16)
    app = app_for(tmp_path, data_dir, config, runs_dir=tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dashboard.view.step > 0, 60)
        await pilot.press("x")
        assert await wait_until(pilot, lambda: app.dashboard.outcome is not None, 60)
        log = " ".join(" ".join(line.text for line in app.dashboard.query_one("#log").lines).split())
        assert "no evaluation happened" in log and "0.0%" not in log
        await pilot.press("e")
        assert await wait_until(pilot, lambda: isinstance(app.screen, Question) and app.screen.id == "confirm-export", 30)
        await pilot.press("n")
        await pilot.pause(0.3)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not list((run_dir / "export").iterdir())


# ---- 8. every tab stop shows focus; filtering where the hint says --------------------------------


@asynchronous
async def test_tab_from_the_list_reaches_the_form_and_slash_filters(tmp_path, data_dir):
    app = app_for(tmp_path, data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        setup = app.setup_screen
        setup.query_one("#arch-table").focus()
        await pilot.press("tab")
        assert setup.focused.id == "preset"  # no invisible stop in between
        for _ in range(30):  # every stop is a field the user can see and change
            await pilot.press("tab")
            assert setup.focused is not None and setup.focused.id not in (None, "form"), setup.focused
        setup.query_one("#arch-table").focus()
        assert "/" in setup.query_one("#arch-filter").placeholder
        await pilot.press("slash", "r", "e", "s")
        await pilot.pause(0.2)
        assert isinstance(app.screen, SetupScreen)  # the letters filtered; r did not open the runs list
        names = setup.query_one("#arch-list").visible_names
        assert names and all("res" in name or "res" in desc for name, desc in
                             ((a.name, a.description.lower()) for a in setup.query_one("#arch-list").architectures
                              if a.name in names))


# ---- 9-11. the runs list, a second run, the dashboard --------------------------------------------


@asynchronous
async def test_a_second_run_starts_with_a_clean_log_and_the_dashboard_shows_lr_and_every_class(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, epochs=1)
    app = app_for(tmp_path, data_dir, config, runs_dir=tmp_path / "runs")
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        dashboard = app.dashboard
        assert await wait_until(pilot, lambda: dashboard.outcome is not None, 120)
        classes = dashboard.query_one("#classes")
        assert classes.row_count == 10 and classes.region.height >= 10 + 3  # all ten rows fit at 120x40
        labels = [str(column.label) for column in classes.columns.values()]
        assert labels[:4] == ["class", "acc", "prec", "F1"]
        assert sum(column.get_render_width(classes) for column in list(classes.columns.values())[:4]) <= classes.size.width
        assert dashboard.view.lr is not None and "lr " in str(dashboard.query_one("#status").render())
        assert dashboard.charts.lr.point_count() > 0
        first = dashboard.outcome
        await pilot.press("escape")
        await pilot.pause(0.2)
        await pilot.press("s")
        assert await wait_until(pilot, lambda: dashboard.outcome is not first and app.screen is dashboard, 60), notes
        lines = [line.text for line in dashboard.query_one("#log").lines]
        assert lines and lines[0].startswith("starting"), lines[:3]
        assert await wait_until(pilot, lambda: dashboard.outcome is not None and not dashboard.busy, 120)
        lines = [line.text for line in dashboard.query_one("#log").lines]
        # One run's lines: its start and its end, nothing of the run before.
        assert sum(line.startswith("starting") for line in lines) == 1
        assert sum("finished after" in line for line in lines) == 1


@asynchronous
async def test_the_runs_table_keeps_status_and_best_at_80_columns(tmp_path, data_dir):
    fit(tiny_config(tmp_path, data_dir), lambda event: None)
    app = app_for(tmp_path, data_dir, runs_dir=tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.summaries, 30)
        table = app.screen.query_one("#runs-table")
        await pilot.pause(0.2)
        shown = [str(column.label) for column in table.columns.values()]
        assert shown[:3] == ["run", "status", "best"]
        widths = sum(column.get_render_width(table) for column in list(table.columns.values())[:3])
        assert widths <= 80


# ---- 13. checkboxes read without colour ----------------------------------------------------------


@asynchronous
async def test_checked_and_unchecked_boxes_differ_without_colour(tmp_path, data_dir):
    app = app_for(tmp_path, data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        on = app.setup_screen.query_one("#augment-crop")
        off = app.setup_screen.query_one("#augment-rotate")
        assert on.value and not off.value
        assert "X" in on.render().plain and "X" not in off.render().plain


def test_epoch_rows_from_a_run_replay_as_the_events_they_were(tmp_path, data_dir):
    from workbench.core.events import from_row

    recorded = []
    run_dir = fit(tiny_config(tmp_path, data_dir, epochs=1), recorded.append)
    (row,) = runs.epoch_records(runs.read_metrics(run_dir))
    (event,) = [e for e in recorded if isinstance(e, EpochMetrics)]
    assert from_row(row) == event
