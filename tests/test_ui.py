"""Pilot-driven tests of the app: train from the keys, export, bad input, quitting, failures, sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from textual.widgets._footer import FooterKey

from tests.support.ui import (
    SIZE,
    app_for,
    asynchronous,
    make_app,
    models_ready,
    record_notifications,
    run_folders,
    tiny_config,
    type_into,
    wait_until,
    write_test_pngs,
)
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.config import RunConfig
from workbench.core.events import EpochMetrics, Finished, StepMetrics
from workbench.core.training.engine import fit
from workbench.ui.app import build_app
from workbench.ui.bridge import (
    MAX_BUFFERED_STEPS,
    EngineBridge,
    EngineEvent,
    StepsReady,
)
from workbench.ui.screens.images import ImagesScreen
from workbench.ui.screens.modals import Question, TooSmall
from workbench.ui.screens.runs import RunScreen, RunsScreen
from workbench.ui.screens.setup import SetupScreen
from workbench.ui.widgets.preview import Scale, fit_scale

# ---- training from the keyboard ------------------------------------------------------------


@asynchronous
async def test_train_from_keys_then_export_and_browse(tmp_path, data_dir):
    app = make_app(tmp_path, data_dir)
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        setup = app.setup_screen
        assert setup.focused.id == "arch-table"
        await pilot.press("up", "up")  # basic_cnn -> mlp -> linear
        assert await wait_until(pilot, lambda: setup.form_values()["arch"] == "linear", 5)
        await type_into(pilot, "#epochs", "1")
        await type_into(pilot, "#batch_size", "256")
        setup.query_one("#arch-table").focus()
        await pilot.press("s")

        dashboard = app.dashboard
        assert await wait_until(pilot, lambda: dashboard.outcome is not None, 120)
        assert isinstance(dashboard.outcome, Finished), dashboard.outcome
        assert app.screen is dashboard
        assert dashboard.charts.loss.point_count("steps") > 0
        # The default 10% validation split is charted every epoch; test once, after the last.
        assert dashboard.charts.accuracy.point_count("val") == 1
        assert dashboard.charts.accuracy.point_count("test") == 1
        assert dashboard.view.phase == "finished" and dashboard.view.best == (dashboard.outcome.best_val_acc, 1)
        assert dashboard.query_one("#classes").row_count == 10
        (run_dir,) = run_folders(tmp_path)
        assert (run_dir / "metrics.jsonl").is_file()
        config = RunConfig.from_toml(run_dir / "config.toml")
        assert (config.arch, config.epochs, config.batch_size) == ("linear", 1, 256)
        assert 'epochs = 1' in (tmp_path / "config" / "last.toml").read_text()

        await pilot.press("e")
        exported = run_dir / "export"
        assert await wait_until(
            pilot, lambda: any("exported to" in note for note in notes), 120
        ), notes
        assert (exported / "model.safetensors").is_file() and (exported / "model.pt2").is_file()
        assert any("verified" in note for note in notes)

        await pilot.press("r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.summaries)
        await pilot.press("enter")
        assert await wait_until(
            pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query_one("#charts").point_count() > 0
        )
        await pilot.press("escape", "escape")
        assert await wait_until(pilot, lambda: app.screen is dashboard, 5)


@asynchronous
async def test_pressing_start_twice_trains_once(tmp_path, data_dir):
    # Enough epochs that x always lands mid-run, however fast the machine is.
    config = tiny_config(tmp_path, data_dir, arch="basic_cnn", epochs=200, batch_size=64)
    app = make_app(tmp_path, data_dir, config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s", "s")
        assert await wait_until(pilot, lambda: app.dashboard.view.step > 0, 90)
        assert app.available("start", app.screen) is False  # not offered while a run trains
        await pilot.press("s")
        await pilot.press("x")
        assert await wait_until(pilot, lambda: app.dashboard.outcome is not None, 60)
        assert isinstance(app.dashboard.outcome, Finished) and app.dashboard.outcome.status == "stopped"
        await pilot.pause(1.0)  # a second start, had one been queued, would have begun by now
        assert not app.training
    assert len(run_folders(tmp_path)) == 1


@asynchronous
async def test_quit_while_training_stops_cleanly(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, arch="basic_cnn", epochs=5, batch_size=32)
    app = make_app(tmp_path, data_dir, config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dashboard.view.step > 0, 90)
        await pilot.press("q")
        assert await wait_until(pilot, lambda: isinstance(app.screen, Question), 5)
        await pilot.press("y")
        assert await wait_until(pilot, lambda: app.return_code is not None, 15)  # a bounded wait: a hang fails
    (run_dir,) = run_folders(tmp_path)
    assert (run_dir / "status").read_text().split()[0] == "stopped"
    assert (run_dir / "checkpoints" / "last.pt").is_file()


@asynchronous
async def test_quit_can_be_cancelled(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, arch="basic_cnn", epochs=3, batch_size=32)
    app = make_app(tmp_path, data_dir, config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dashboard.view.step > 0, 90)
        await pilot.press("p")
        assert app.dashboard.control.paused and app.dashboard.view.phase == "paused"
        await pilot.press("q")
        assert await wait_until(pilot, lambda: isinstance(app.screen, Question), 5)
        # The question's own keys in its footer, not the dashboard's that do nothing under it.
        question_keys = lambda: [(key.key, key.description) for key in app.screen.query(FooterKey)]  # noqa: E731
        assert await wait_until(pilot, lambda: question_keys() == [("y", "Yes"), ("n", "No")], 5), question_keys()
        await pilot.press("n")
        assert await wait_until(pilot, lambda: app.screen is app.dashboard, 5)
        assert app.return_code is None and app.training
        await pilot.press("x")
        assert await wait_until(pilot, lambda: app.dashboard.outcome is not None, 30)
        assert app.dashboard.outcome.status == "stopped"
        # Start is the form's: on the dashboard s would train a copy of this run unasked.
        assert app.available("start", app.dashboard) is False
        await pilot.press("s")
        await pilot.pause(0.3)
        assert not app.training and app.dashboard.outcome.status == "stopped"
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.available("start", app.screen) is True, 5)


@asynchronous
async def test_failed_training_is_a_sentence_and_the_app_stays_up(tmp_path, data_dir):
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    app = make_app(tmp_path, data_dir, tiny_config(tmp_path, data_dir, dataset=str(empty)))
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dashboard.outcome is not None, 60)
        assert app.dashboard.view.phase == "failed"
        reason = app.dashboard.outcome.reason
        assert reason and reason in app.dashboard.view.reason
        assert any(reason in note for note in notes)
        assert not app.training
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SetupScreen), 5)
        await pilot.press("r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), 5)
        assert app.return_code is None


@asynchronous
async def test_interrupted_run_is_offered_and_resumed(tmp_path, data_dir):
    from workbench.core import runs
    from workbench.core.training.control import TrainControl
    from workbench.core.training.engine import fit

    control = TrainControl()

    def stop_after_first_epoch(event) -> None:
        if isinstance(event, EpochMetrics):
            control.stop()

    run_dir = fit(tiny_config(tmp_path, data_dir, epochs=2), stop_after_first_epoch, control)
    finished_process = subprocess.Popen([sys.executable, "-c", "pass"])
    finished_process.wait()
    info = runs.read_run_info(run_dir)
    runs.write_run_info(run_dir, {**info, "pid": finished_process.pid})
    runs.write_status(run_dir, "running")
    assert runs.is_interrupted(run_dir)

    app = make_app(tmp_path, data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: isinstance(app.screen, Question), 30)
        assert app.screen.id == "offer-resume"
        await pilot.press("y")
        assert await wait_until(pilot, lambda: app.dashboard.outcome is not None, 120)
        outcome = app.dashboard.outcome
        assert isinstance(outcome, Finished) and outcome.epochs_done == 2
        assert app.dashboard.charts.accuracy.point_count("val") == 2  # epoch 1 from history
    assert runs.read_status(run_dir)[0] == "finished"
    assert len(run_folders(tmp_path)) == 1


@asynchronous
async def test_a_finished_run_trains_on_from_the_runs_list_to_more_epochs(tmp_path, data_dir):
    from workbench.core import runs
    from workbench.core.training.engine import fit
    from workbench.ui.screens.modals import TrainOnQuestion
    from workbench.ui.screens.runs import RunsScreen

    run_dir = fit(tiny_config(tmp_path, data_dir, epochs=1), lambda event: None)
    app = make_app(tmp_path, data_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.summaries, 30)
        await pilot.press("t")
        assert await wait_until(pilot, lambda: isinstance(app.screen, TrainOnQuestion), 10)
        field = app.screen.query_one("#train-on-epochs")
        assert field.value == "2"  # a finished run: twice its epochs, to start with
        field.value = "1"
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, TrainOnQuestion)  # no more than it has done: said, nothing started
        assert "more than the 1 epochs" in str(app.screen.query_one("#train-on-error").render())
        field.value = "3"
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: app.dashboard.outcome is not None, 120)
        outcome = app.dashboard.outcome
        assert isinstance(outcome, Finished) and outcome.epochs_done == 3
    assert runs.read_status(run_dir)[0] == "finished" and len(run_folders(tmp_path)) == 1


@asynchronous
async def test_background_failures_become_messages(tmp_path, data_dir):
    """A run folder without checkpoints cannot be exported: the worker fails, the app says why."""
    broken = tmp_path / "runs" / "20250101-120000-linear"
    broken.mkdir(parents=True)
    (broken / "config.toml").write_text(tiny_config(tmp_path, data_dir).to_toml())
    (broken / "status").write_text("failed\n")
    app = make_app(tmp_path, data_dir)
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.summaries, 20)
        await pilot.press("e")  # never evaluated: the app asks first (the first-hour issue), then fails
        assert await wait_until(pilot, lambda: isinstance(app.screen, Question), 20)
        await pilot.press("y")
        assert await wait_until(pilot, lambda: any("export failed" in note for note in notes), 60), notes
        assert app.return_code is None


# ---- images --------------------------------------------------------------------------------


@asynchronous
async def test_images_newest_first_with_exact_pixels(tmp_path, data_dir):
    run_dir = tmp_path / "runs" / "20250101-120000-linear"
    paths = write_test_pngs(run_dir)
    app = make_app(tmp_path, data_dir)
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(ImagesScreen(run_dir, tmp_path / "runs"))
        assert await wait_until(pilot, lambda: isinstance(app.screen, ImagesScreen) and app.screen.files, 10)
        screen = app.screen
        assert [f.path.name for f in screen.files] == ["big.png", "checks.png", "gradient.png"]
        preview = screen.query_one("#preview")
        assert await wait_until(pilot, lambda: preview.image is not None and preview.image.path == paths[2], 10)
        assert preview.scale.shrink > 1 and "every" in preview.border_subtitle  # 900 px does not fit

        await pilot.press("down", "down")  # gradient.png, 64x48: fits, so it is enlarged by a whole factor
        assert await wait_until(pilot, lambda: preview.image is not None and preview.image.path == paths[0], 10)
        await pilot.pause(0.2)
        scale = preview.scale
        assert scale.shrink == 1 and scale.enlarge >= 1
        source = Image.open(paths[0]).convert("RGB")
        strip = preview.render_line(3)
        column = 0
        for segment in strip:
            if segment.text.strip() != "▀":
                column += segment.cell_length
                continue
            for offset in range(segment.cell_length):
                x = scale.source(column + offset)
                assert segment.style.color.triplet == source.getpixel((x, scale.source(6)))
                assert segment.style.bgcolor.triplet == source.getpixel((x, scale.source(7)))
            column += segment.cell_length
        assert column > 0

        # + and - step the zoom by whole factors and say so; 0 fits the panel again.
        await pilot.press("plus")
        assert preview.scale == Scale(enlarge=scale.enlarge + 1) and "fitted" not in preview.border_subtitle
        await pilot.press("minus", "minus")
        assert preview.scale == Scale(enlarge=scale.enlarge - 1) if scale.enlarge > 1 else preview.scale.shrink == 2
        await pilot.press("0")
        assert preview.scale == scale and "fitted" in preview.border_subtitle


def test_fit_scale_uses_whole_factors():
    assert fit_scale(32, 32, 80, 20) == Scale()  # fits, and 2x would not
    assert fit_scale(32, 32, 80, 40) == Scale(enlarge=2)
    assert fit_scale(900, 700, 80, 30) == Scale(shrink=12)
    assert Scale(shrink=3).source(5) == 15 and Scale(enlarge=3).source(5) == 1


# ---- the bridge ----------------------------------------------------------------------------


class Collector:
    def __init__(self) -> None:
        self.messages: list = []

    def post_message(self, message) -> bool:
        self.messages.append(message)
        return True


def step(n: int) -> StepMetrics:
    return StepMetrics(
        epoch=1, step=n, steps_per_epoch=10_000, global_step=n, loss=float(n), acc=0.5, lr=0.1,
        images_per_s=1000.0, elapsed_s=n * 0.01, eta_s=1.0,
    )


def test_bridge_merges_steps_and_never_drops_other_events():
    target = Collector()
    bridge = EngineBridge(target)
    for n in range(1, 1001):
        bridge(step(n))
    bridge(EpochMetrics(epoch=1, epochs=1, global_step=1000, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5,
                        test_loss=None, test_acc=None, best_epoch=1, best_val_acc=0.5, lr=0.1,
                        images_per_s=1000.0, epoch_s=1.0, elapsed_s=1.0, eta_s=0.0))
    ready = [m for m in target.messages if isinstance(m, StepsReady)]
    events = [m for m in target.messages if isinstance(m, EngineEvent)]
    assert len(ready) == 1 and len(events) == 1  # one wake-up for 1000 samples
    assert ready[0].can_replace(StepsReady())
    steps = bridge.take_steps()
    assert len(steps) <= MAX_BUFFERED_STEPS + 1
    assert steps[-1].step == 1000  # the newest sample is kept exactly
    assert [s.global_step for s in steps] == sorted(s.global_step for s in steps)
    bridge(step(1001))
    assert sum(isinstance(m, StepsReady) for m in target.messages) == 2


# ---- sizes and start-up ------------------------------------------------------------------


@asynchronous
async def test_tiny_terminal_shows_a_notice_and_recovers(tmp_path, data_dir):
    app = make_app(tmp_path, data_dir)
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause(0.3)
        assert isinstance(app.screen, TooSmall)
        await pilot.press("s", "r", "i", "escape", "tab", "down")
        await pilot.pause(0.3)
        assert isinstance(app.screen, TooSmall) and app.return_code is None
        await pilot.resize_terminal(80, 24)
        assert await wait_until(pilot, lambda: isinstance(app.screen, SetupScreen), 5)


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
@asynchronous
async def test_setup_and_dashboard_fit_small_terminals(tmp_path, data_dir, size):
    app = make_app(tmp_path, data_dir)
    async with app.run_test(size=size) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        form = app.setup_screen.query_one("#form")
        assert form.region.width >= 28 and app.setup_screen.query_one("#arch-table").region.height >= 5
        await app.push_screen("dashboard")
        await pilot.pause(0.2)
        charts = app.dashboard.query_one("#charts")
        assert charts.region.height >= 8 and charts.region.width == size[0]


def test_importing_the_ui_does_not_import_torch():
    code = "import sys, workbench.ui.app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@asynchronous
async def test_the_event_log_rewraps_its_lines_when_it_gets_wider():
    from textual.app import App

    from workbench.ui.widgets.event_log import EventLog

    class LogOnly(App):
        def compose(self):
            yield EventLog(id="log")

    app = LogOnly()
    async with app.run_test(size=(40, 10)) as pilot:
        log = app.query_one(EventLog)
        log.add("epoch 1/1: train loss 1.571 acc 41.9% · test loss 1.386 acc 49.5%")
        await pilot.pause()
        assert len(log.lines) > 1  # wrapped at 40 columns
        await pilot.resize_terminal(120, 10)
        await pilot.pause()
        assert len(log.lines) == 1


@asynchronous
async def test_export_during_training_leaves_the_run_as_it_would_have_been(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, arch="basic_cnn", image_size=16, epochs=2, batch_size=64, optimizer="adamw")
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


@asynchronous
async def test_sigterm_in_the_app_saves_a_checkpoint_and_exits_143(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, epochs=30, batch_size=16)
    app = build_app(config, runs_dir=tmp_path / "runs", config_dir=tmp_path / "config", data_dir=data_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dashboard.view.step > 0, 60)
        app.terminate()  # what the SIGTERM handler calls
        assert await wait_until(pilot, lambda: app.return_code is not None, 60)
    assert app.return_code == 143
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert runs.read_status(run_dir) == ("stopped", "SIGTERM")
    assert (run_dir / "checkpoints" / "last.pt").is_file()
