"""Your own network in the app: "add a file…" checks the file, lists it with its count, and trains it."""

from __future__ import annotations

from tests.support.ui import SIZE, asynchronous, models_ready, tiny_config, wait_until
from workbench.ui.app import build_app
from workbench.ui.screens.network_file import NetworkFileScreen
from workbench.ui.widgets.arch_list import ADD_FILE, ArchitectureList

NETWORK = '''\
import torch.nn as nn


def make_net(in_channels, num_classes, image_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))
'''


async def _open_add_file(pilot, app) -> NetworkFileScreen:
    table = app.setup_screen.query_one("#arch-table")
    table.focus()
    table.move_cursor(row=table.get_row_index(ADD_FILE))
    await pilot.press("enter")
    assert await wait_until(pilot, lambda: isinstance(app.screen, NetworkFileScreen), 10)
    return app.screen


@asynchronous
async def test_add_a_file_shows_a_bad_file_then_lists_a_good_one_and_trains_it(tmp_path, data_dir):
    (tmp_path / "bad.py").write_text("def make_net(c, k, s)\n    pass\n")
    (tmp_path / "good.py").write_text(NETWORK)
    config = tiny_config(tmp_path, data_dir, image_size=12)
    app = build_app(config, runs_dir=tmp_path / "runs", config_dir=tmp_path / "config", data_dir=data_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: models_ready(app))
        screen = await _open_add_file(pilot, app)
        spec = screen.query_one("#network-spec")
        spec.value = f"{tmp_path / 'bad.py'}:make_net"
        await pilot.press("enter")
        status = screen.query_one("#network-status")
        assert await wait_until(pilot, lambda: "syntax error" in str(status.render()), 20)
        assert "bad.py line 1" in str(status.render()) and app.screen is screen  # still open, fix and retry
        spec.value = f"{tmp_path / 'good.py'}:make_net"
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: not isinstance(app.screen, NetworkFileScreen), 20)
        arch_list = app.setup_screen.query_one(ArchitectureList)
        arch = f"{tmp_path / 'good.py'}:make_net"
        assert arch_list.chosen == arch and arch in arch_list.visible_names
        assert arch_list.params[arch] == 3 * 12 * 12 * 10 + 10
        assert "good.make_net" in str(app.setup_screen.query_one("#arch-summary").render())
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dashboard is not None and app.dashboard.outcome is not None, 120)
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "network" / "good.py").read_text() == NETWORK
