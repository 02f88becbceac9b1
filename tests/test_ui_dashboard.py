"""The one dashboard: a run looks the same live and followed from its folder, follows another
process's stop and resume, and its charts are readable for any length of run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.recorded import write_recorded_run
from tests.support.ui import (
    SIZE,
    app_for,
    app_in,
    asynchronous,
    record_notifications,
    settle,
    tiny_config,
    wait_until,
)
from workbench.core.events import Failed, from_row
from workbench.ui.app import build_app
from workbench.ui.bridge import EngineBridge
from workbench.ui.screens.dashboard import DashboardScreen
from workbench.ui.widgets.charts import _span, compact_labels, epoch_ticks, nice_ticks


def copy_recorded_run(runs_dir: Path, recorded: Path) -> Path:
    run_dir = runs_dir / recorded.name
    shutil.copytree(recorded, run_dir)
    return run_dir


def without_toasts(app):
    """Toasts come and go on their own timers: a screen compared or snapshotted must not hold one."""
    app.notify = lambda *args, **kwargs: None
    return app


async def finished_screen(pilot, screen: DashboardScreen) -> dict:
    """What the dashboard shows once the run has finished: its state, status strip, log, per-class
    table and charts (the screen as data: a table's column widths depend on when it was laid out)."""
    assert await wait_until(pilot, lambda: screen.view.phase == "finished", 30)
    screen.charts.redraw_now()
    await settle(pilot)
    classes = screen.query_one("#classes")
    return {
        "curves": [(curve.xs, curve.ys) for curve in screen.view.curves],
        "phase": (screen.view.phase, screen.view.epoch, screen.view.epochs, screen.view.best, screen.view.sessions),
        "title": screen.sub_title,
        "status": str(screen.query_one("#status").render()),
        "log": list(screen.query_one("#log")._markup),
        "classes": [[str(cell) for cell in classes.get_row_at(i)] for i in range(classes.row_count)],
        "charts": [(c.epochs, c.mark, c.point_count()) for c in (screen.charts.loss, screen.charts.accuracy,
                                                                 screen.charts.lr)],
        "keys": sorted(binding.binding.action for binding in pilot.app.active_bindings.values()),
    }


@asynchronous
async def test_a_recorded_run_looks_the_same_followed_from_its_folder_and_live(in_tmp, recorded_run):
    run_dir = copy_recorded_run(Path("runs"), recorded_run)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    followed_app = without_toasts(app_in(in_tmp))
    async with followed_app.run_test(size=(120, 40)) as pilot:
        followed_app.watch_run(run_dir)
        assert await wait_until(pilot, lambda: isinstance(followed_app.screen, DashboardScreen), 10)
        followed = await finished_screen(pilot, followed_app.screen)

    live_app = without_toasts(app_in(in_tmp))
    async with live_app.run_test(size=(120, 40)) as pilot:
        await live_app.push_screen("dashboard")
        dashboard = live_app.dashboard
        dashboard.bridge = bridge = EngineBridge(dashboard)  # what fit() is handed in the app's own thread
        engine = threading.Thread(target=lambda: [bridge(from_row(row, run_dir)) for row in rows])
        engine.start()
        live = await finished_screen(pilot, dashboard)
        engine.join()

    assert followed["title"] == recorded_run.name and "finished" in followed["status"]
    assert followed["charts"][0][:2] == (3, followed["phase"][3][1]) and len(followed["classes"]) == 10
    assert live == followed


def test_a_followed_run_snapshot(snap_compare, in_tmp):
    run_dir = write_recorded_run(Path("runs"))  # fixed numbers: a snapshot must not hold a run's timings

    async def follow(pilot):
        pilot.app.watch_run(run_dir)
        assert await wait_until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen), 10)
        await finished_screen(pilot, pilot.app.screen)

    assert snap_compare(without_toasts(app_in(in_tmp)), terminal_size=(80, 24), run_before=follow)


def train_command(runs_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workbench", "train", "--dataset", "shapes", "--arch", "linear", "--image-size", "12",
            "--device", "cpu", "--batch-size", "32", "--data-dir", str(data_dir), "--runs-dir", str(runs_dir), *extra]


@asynchronous
async def test_watch_sees_another_process_stop_then_resume_then_finish(in_tmp, data_dir):
    runs_dir = in_tmp / "runs"
    first = subprocess.Popen(train_command(runs_dir, data_dir, "--epochs", "30"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    second = None
    try:
        app = app_in(in_tmp)
        async with app.run_test(size=(120, 40)) as pilot:
            started = lambda: [p for p in runs_dir.glob("*/metrics.jsonl") if '"start"' in p.read_text()]  # noqa: E731
            assert await wait_until(pilot, lambda: bool(runs_dir.is_dir() and started()), 120)
            run_dir = started()[0].parent
            app.watch_run(run_dir)
            assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen), 10)
            screen = app.screen
            assert await wait_until(pilot, lambda: screen.view.phase == "training" and screen.view.global_step > 0, 60)
            await pilot.press("x")  # through the run's control file
            assert await wait_until(pilot, lambda: screen.view.phase == "stopped", 60), screen.view.phase
            assert first.wait(60) != 0 and not app.available("stop", screen)  # nothing left to stop: the key is gone
            epochs = screen.view.epoch + 2
            second = subprocess.Popen([sys.executable, "-m", "workbench", "train", "--resume", str(run_dir), "--epochs",
                                       str(epochs), "--data-dir", str(data_dir)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            seen = []

            def phase_is(wanted):
                seen.append(screen.view.phase)
                return screen.view.phase == wanted

            assert await wait_until(pilot, lambda: phase_is("finished"), 120), (seen, second.poll())
            assert "training" in seen[seen.index("stopped") + 1 if "stopped" in seen else 0:]
            assert screen.view.sessions == 2 and screen.view.epoch == epochs
            assert "finished" in str(screen.query_one("#status").render())
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()


@pytest.mark.parametrize("epochs", [1, 3, 12, 37, 500])
def test_epoch_ticks_are_whole_round_and_end_at_the_last_epoch(epochs):
    ticks = epoch_ticks(epochs, 8)
    assert ticks[0] == 0 and ticks[-1] == epochs and len(ticks) <= 10
    assert all(isinstance(t, int) for t in ticks) and ticks == sorted(set(ticks))


def test_y_ticks_are_compact():
    assert compact_labels(nice_ticks(0, 0.003, 4)) == ["0", "0.001", "0.002", "0.003"]
    assert compact_labels(nice_ticks(1e-7, 3e-7, 3)) == ["1e-07", "2e-07", "3e-07"]
    assert compact_labels(nice_ticks(0, 100, 5)) == ["0", "20", "40", "60", "80", "100"]
    low, high = _span([0.003] * 50)  # a constant learning rate gets a band around it, labelled shortly
    assert all(len(label) <= 6 for label in compact_labels(nice_ticks(low, high, 4)))


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
async def test_a_failed_run_says_training_failed_once(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, epochs=2, optimizer="sgd", lr=1e6, momentum=0.0)
    app = build_app(config, runs_dir=tmp_path / "runs", config_dir=tmp_path / "config", data_dir=data_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert await wait_until(pilot, lambda: isinstance(app.dashboard.outcome, Failed), 60)
        lines = [line.text for line in app.dashboard.query_one("#log").lines]
        failed = [line for line in lines if "training failed" in line.lower()]
        assert failed and all(line.lower().count("training failed") == 1 for line in failed), failed


@asynchronous
async def test_panels_swapped_in_on_a_small_terminal_show_this_runs_curve_and_lines_at_their_width(tmp_path, data_dir):
    app = app_for(tmp_path, data_dir, tiny_config(tmp_path, data_dir, epochs=2, image_size=12), runs_dir=tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        dashboard = app.dashboard
        await pilot.press("s")
        assert await wait_until(pilot, lambda: dashboard.outcome is not None, 120)
        status = dashboard.query_one("#status")
        details = str(status.render()).splitlines()[1]  # the device and the lr leave before the best is cut
        assert details.startswith("elapsed") and "best val" in details and len(details) <= status.size.width, details
        await pilot.press("o")  # the lr chart and the per-class table take the loss chart's and the log's places
        await pilot.pause(0.3)
        lr = dashboard.charts.lr
        assert lr.region.area > 0 and lr._drawn_version == lr.version  # this run's curve, not an empty frame
        first = dashboard.outcome
        await pilot.press("escape", "s")  # a second run, from the form, trains while the log is hidden
        assert await wait_until(pilot, lambda: dashboard.outcome not in (None, first) and not dashboard.busy, 120)
        assert await wait_until(pilot, lambda: lr._drawn_version == lr.version, 5)  # shown: the timer draws it
        await pilot.press("o")  # the log back: its lines use its whole width, not the 20 columns of a hidden log
        await pilot.pause(0.3)
        log = dashboard.query_one("#log")
        assert max(len(line.text) for line in log.lines) > 40, [line.text for line in log.lines][:5]


def test_the_status_details_leave_out_the_device_and_lr_before_the_time_or_the_best():
    from workbench.ui.widgets.status import _fitted

    details = {"phase": "", "elapsed": "elapsed 1m 05s", "eta": "ETA 2m 10s", "speed": "9,317 img/s",
               "device": "NVIDIA GeForce RTX 4090", "memory": "", "lr": "lr 0.00213",
               "best": "best val 61.20% (epoch 3)", "last": ""}
    everything = " · ".join(text for text in details.values() if text)
    assert " · ".join(_fitted(details, 0)) == everything == " · ".join(_fitted(details, 200))  # room: all of it
    fitted = " · ".join(_fitted(details, 78))  # an 80-column terminal, less the padding
    assert fitted == "elapsed 1m 05s · ETA 2m 10s · 9,317 img/s · best val 61.20% (epoch 3)"
    assert " · ".join(_fitted(details, 50)) == "elapsed 1m 05s · ETA 2m 10s · best val 61.20% (epoch 3)"
