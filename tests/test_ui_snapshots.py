"""Snapshot tests of each screen, made deterministic: recorded events, generated PNGs, fixed names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.test_ui import models_ready, wait_until, write_test_pngs
from workbench.core import runs
from workbench.core.config import RunConfig
from workbench.core.events import (
    CheckpointSaved,
    EpochMetrics,
    Finished,
    ImagesSaved,
    Notice,
    RunStarted,
    StepMetrics,
    to_row,
)
from workbench.ui.screens.images import ImagesScreen

CLASSES = ("circle", "square", "triangle", "cross", "ring", "horizontal stripes", "vertical stripes", "checkerboard")
RUN_NAME = "20250101-120000-basic_cnn"
EPOCHS, STEPS, SAMPLES = 3, 40, 8


def recorded_events(run_dir: Path) -> list:
    """A finished 3-epoch run as the engine would report it, with smooth, fixed numbers."""
    events: list = [
        Notice("no GPU found: training on the CPU", "warning"),
        RunStarted(run_dir, "basic_cnn", 62_958, "cpu", "CPU (2 threads)", "shapes", CLASSES,
                   9_000, 2_000, EPOCHS, STEPS, val_size=1_000, batch_size=128),
    ]
    for epoch in range(1, EPOCHS + 1):
        for sample in range(1, SAMPLES + 1):
            step = sample * STEPS // SAMPLES
            t = (epoch - 1) + step / STEPS
            events.append(StepMetrics(
                epoch=epoch, step=step, steps_per_epoch=STEPS, global_step=(epoch - 1) * STEPS + step,
                loss=2.3 * math.exp(-0.6 * t) + 0.05 * math.sin(7 * t), acc=1 - 0.9 * math.exp(-0.8 * t),
                lr=0.003, images_per_s=1500.0, elapsed_s=8.0 * t, eta_s=8.0 * (EPOCHS - t),
            ))
        val_acc = 0.55 + 0.1 * epoch
        last = epoch == EPOCHS
        events.append(EpochMetrics(
            epoch=epoch, epochs=EPOCHS, global_step=epoch * STEPS, train_loss=2.3 * math.exp(-0.6 * epoch),
            train_acc=1 - 0.9 * math.exp(-0.8 * epoch), val_loss=2.0 * math.exp(-0.55 * epoch),
            val_acc=val_acc, test_loss=2.05 * math.exp(-0.55 * epoch) if last else None,
            test_acc=val_acc - 0.01 if last else None, best_epoch=epoch, best_val_acc=val_acc,
            lr=0.003, images_per_s=1500.0, epoch_s=8.0, elapsed_s=8.0 * epoch, eta_s=8.0 * (EPOCHS - epoch),
            per_class_acc={name: min(1.0, val_acc + 0.04 * (i - 4)) for i, name in enumerate(CLASSES)},
            per_class_split="val",
        ))
        events.append(CheckpointSaved(run_dir / "checkpoints" / "last.pt", epoch, best=False))
        events.append(CheckpointSaved(run_dir / "checkpoints" / "best.pt", epoch, best=True))
        if epoch in (1, EPOCHS):
            events.append(ImagesSaved((run_dir / "images" / "confusion.png", run_dir / "images" / "top_losses.png")))
    events.append(Finished(run_dir, "finished", EPOCHS, 24.0, best_epoch=EPOCHS, best_val_acc=0.85,
                           best_test_acc=0.84, final_test_acc=0.84, steps_done=EPOCHS * STEPS, train_s=24.0))
    return events


def write_recorded_run(runs_dir: Path) -> Path:
    """A run folder holding the recorded run, as the engine would have written it."""
    run_dir = runs_dir / RUN_NAME
    run_dir.mkdir(parents=True)
    config = RunConfig.from_mapping(dict(dataset="shapes", arch="basic_cnn", epochs=EPOCHS, runs_dir=str(runs_dir)))
    (run_dir / "config.toml").write_text(config.to_toml())
    runs.write_status(run_dir, "finished")
    lines = [to_row(event) for event in recorded_events(run_dir)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Work in tmp_path so paths on screen are short and the same on every run."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def app_in(folder: Path):
    """The app working in `folder` (the current folder), with paths on screen relative to it."""
    from workbench.ui.app import build_app

    return build_app(None, runs_dir=Path("runs"), config_dir=folder / "config", data_dir=folder / "data")


async def settle(pilot) -> None:
    """Let pending work land, then drop toasts (they time out, so they would make snapshots vary)."""
    await pilot.pause(0.2)
    pilot.app.clear_notifications()
    await pilot.pause(0.3)


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
