"""The form's devices field: 2 or more processes train the run through torch.distributed.run, and
the dashboard follows it (the watch screen); a count this machine cannot give is marked."""

from __future__ import annotations

import json

import pytest
import torch.distributed as dist

from tests.support.ui import SIZE, asynchronous, models_ready, tiny_config, wait_until
from workbench.core.events import Finished
from workbench.launch import devices_problem
from workbench.ui.app import build_app
from workbench.ui.screens.dashboard import DashboardScreen


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
@asynchronous
async def test_two_devices_start_a_torchrun_job_that_the_dashboard_follows_to_its_end(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, arch="linear", epochs=2, image_size=12, batch_size=128)
    app = build_app(config, runs_dir=tmp_path / "runs", config_dir=tmp_path / "config", data_dir=data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        app.setup_screen.query_one("#devices").value = "2"
        app.setup_screen.query_one("#arch-table").focus()
        await pilot.press("s")
        assert await wait_until(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.followed is not None, 120)
        watch = app.screen
        assert await wait_until(pilot, lambda: isinstance(watch.outcome, Finished), 240)
        assert watch.outcome.status == "finished"
    (run,) = [path for path in (tmp_path / "runs").iterdir() if not path.name.startswith(".")]
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2
    assert (run / "status").read_text().startswith("finished")


@asynchronous
async def test_devices_this_machine_cannot_give_are_marked_and_nothing_starts(tmp_path, data_dir):
    config = tiny_config(tmp_path, data_dir, device="cuda")
    app = build_app(config, runs_dir=tmp_path / "runs", config_dir=tmp_path / "config", data_dir=data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        app.setup_screen.query_one("#devices").value = "two"
        app.setup_screen.query_one("#arch-table").focus()
        await pilot.press("s")
        assert await wait_until(pilot, lambda: "devices" in app.setup_screen.errors, 20)
        assert "not a whole number" in app.setup_screen.errors["devices"]
        assert app.screen is app.setup_screen
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_the_devices_rules():
    assert devices_problem(1, "cuda", 0, "standard") == ""
    assert devices_problem(2, "cpu", 0, "standard") == ""  # CPU processes through gloo
    assert "no CUDA GPU" in devices_problem(2, "cuda", 0, "standard")
    assert "only 1 CUDA GPU visible" in devices_problem(2, "auto", 1, "standard")
    assert devices_problem(4, "auto", 8, "standard") == ""
    assert "one process" in devices_problem(2, "cpu", 0, "speedrun")
    assert "outside" in devices_problem(0, "cpu", 0, "standard")
