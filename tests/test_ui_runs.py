"""The runs list and a past run in the app: the table at narrow widths, names and data shown as text."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App

from tests.support.folders import image_folder
from tests.support.ui import SIZE, app_for, asynchronous, record_notifications, tiny_config, wait_until
from workbench.core.config import RunConfig
from workbench.core.training.engine import fit
from workbench.ui.app import build_app
from workbench.ui.screens.images import ImagesScreen
from workbench.ui.screens.runs import RunScreen, RunsScreen


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


@asynchronous
async def test_markup_characters_in_paths_never_crash_the_app(tmp_path):
    dataset = image_folder(tmp_path / "data[/]set [b]")
    runs_dir = tmp_path / "runs[/]x [red]"
    config = RunConfig.from_mapping(dict(
        dataset=str(dataset), arch="linear", epochs=1, batch_size=8, image_size=8, device="cpu",
        runs_dir=str(runs_dir), data_dir=str(tmp_path / "data"), augment="none",
    ))
    run_dir = fit(config, lambda event: None)
    renamed = run_dir.with_name(run_dir.name + " [red]")  # the run's own name too
    run_dir.rename(renamed)
    app = build_app(config, runs_dir=runs_dir, config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    notes = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.summaries, 30)
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query_one("#charts").point_count() > 0, 30)
        await pilot.press("i")
        assert await wait_until(pilot, lambda: isinstance(app.screen, ImagesScreen) and app.screen.sub_title, 30)
        await pilot.press("escape", "e")
        assert await wait_until(pilot, lambda: any("exported to" in note for note in notes), 90), notes
        await pilot.press("escape", "escape")
        await pilot.pause(0.3)
        assert app.return_code is None  # still running: nothing crashed on a bracket


@asynchronous
async def test_app_shows_control_characters_in_run_data_as_text(tmp_path):
    from textual.widgets import DataTable

    hostile = "cow\x1b]52;c;SGVsbG8=\x07\x1b[2J\x9b1m"
    dataset = image_folder(tmp_path / "animals", classes=("ant", "bee", hostile))
    runs_dir = tmp_path / "runs"
    config = RunConfig.from_mapping(dict(
        dataset=str(dataset), arch="linear", epochs=1, batch_size=8, image_size=8, device="cpu",
        runs_dir=str(runs_dir), data_dir=str(tmp_path / "data"), augment="none",
    ))
    run_dir = fit(config, lambda event: None)
    run_dir.rename(run_dir.with_name(run_dir.name + "\x1b]0;title\x07"))
    app = build_app(config, runs_dir=runs_dir, config_dir=tmp_path / "config", data_dir=tmp_path / "data")

    def everything_shown(screen) -> str:
        texts = [str(screen.sub_title)]
        for table in screen.query(DataTable):
            texts.append(str(table.border_title))
            texts += [str(cell) for row in range(table.row_count) for cell in table.get_row_at(row)]
        return "\n".join(texts)

    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.summaries, 30)
        listed = everything_shown(app.screen)
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunScreen)
                                and app.screen.query_one("#classes", DataTable).row_count > 0, 30)
        detail = everything_shown(app.screen)
    assert "\\x1b]0;title" in listed and "\\x1b]52" in detail
    for text in (listed, detail):
        assert not any(character in text for character in ("\x1b", "\x07", "\x9b")), repr(text)


def fixed_grid(folder: Path) -> Path:
    """A small grid of predictions with its sidecar, as the engine writes them."""
    import torch

    from workbench.core.inspection.grids import Cell, save_grid

    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8, generator=generator)
    cells = [Cell(index=i, label=i % 2, prediction=0, confidence=0.9 - i / 10, source=f"/photos/cat{i}.jpg")
             for i in range(4)]
    folder.mkdir(parents=True, exist_ok=True)
    save_grid(folder / "predictions_epoch001.png", images, cells, ["cat", "dog"], title="predictions")
    return folder / "predictions_epoch001.png"


@asynchronous
async def test_a_tile_of_a_grid_opens_alone_with_its_file_label_prediction_and_the_rgb_under_the_cursor(tmp_path):
    from workbench.core.inspection.tiles import read_tiles
    from workbench.ui.screens.tiles import TileScreen

    png = fixed_grid(tmp_path / "runs" / "20250101-000000-linear" / "images")
    tiles = read_tiles(png)
    app = build_app(None, runs_dir=tmp_path / "runs", config_dir=tmp_path / "config", data_dir=tmp_path / "data")
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(ImagesScreen(png.parent.parent, tmp_path / "runs"))
        assert await wait_until(pilot, lambda: isinstance(app.screen, ImagesScreen) and app.screen.selected == png, 20)
        await pilot.press("t")
        assert await wait_until(pilot, lambda: isinstance(app.screen, TileScreen) and app.screen.tiles, 20)
        screen = app.screen
        info = str(screen.query_one("#tile-info").render())
        assert "true cat · split index 0 · predicted cat 90.0% (right)" in info and "/photos/cat0.jpg" in info
        await pilot.press("n", "right", "down", "down")
        assert screen.number == 1 and screen.cursor == (1, 2)
        r, g, b = tiles[1].pixel(1, 2)
        assert f"pixel (1, 2): RGB ({r}, {g}, {b})" in str(screen.query_one("#tile-pixel").render())
        assert "predicted cat 80.0% (wrong)" in str(screen.query_one("#tile-info").render())
        preview = screen.query_one("#tile-image")
        assert preview.scale.enlarge >= 2 and preview.image.width == 12  # the 12 px image alone, whole-number zoom
        await pilot.press("escape")
        assert isinstance(app.screen, ImagesScreen)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
def test_tile_screen_snapshot(snap_compare, tmp_path, size):
    from workbench.ui.screens.tiles import TileScreen

    png = fixed_grid(tmp_path / "images")

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(TileScreen(png, start=1))

    async def ready(pilot):
        await pilot.pause(0.5)
        await pilot.press("right", "down")
        await pilot.pause(0.2)

    assert snap_compare(Host(), terminal_size=size, run_before=ready)


@asynchronous
async def test_footers_at_80_columns_leave_keys_out_rather_than_cut_them(tmp_path, data_dir):
    from textual.widgets._footer import FooterKey

    from workbench.ui.screens.queue import QueueScreen
    from workbench.ui.screens.setup import SetupScreen

    def shown_whole(screen) -> list[str]:
        """The footer's shown keys; none while one runs past its edge (a resize not laid out yet)."""
        footers = screen.query("FittedFooter")
        keys = [key for key in footers.first().query(FooterKey) if key.display] if footers else []
        if any(key.region.area == 0 or key.region.right > footers.first().region.right for key in keys):
            return []  # a key not laid out yet, or one past the edge
        return [key.action for key in keys]

    async def keys_fit(pilot, wanted: set[str]) -> list[str]:
        """The footer's keys once it is laid out at the terminal's width and shows every key whole,
        `wanted` among them (layout comes a moment after a resize or a new screen)."""
        def settled() -> bool:
            footers = pilot.app.screen.query("FittedFooter")
            footer = footers.first() if footers else None
            return footer is not None and footer.size.width == pilot.app.size.width == footer._composed_for and (
                wanted <= set(shown_whole(pilot.app.screen)))  # keys chosen for this width, not the last one

        assert await wait_until(pilot, settled, 10), (
            wanted, shown_whole(pilot.app.screen), pilot.app.screen)
        return shown_whole(pilot.app.screen)

    config = tiny_config(tmp_path, data_dir, image_size=12)
    app = app_for(tmp_path, data_dir, config, runs_dir=tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dashboard.outcome is not None, 60)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SetupScreen), 5)
        shown = await keys_fit(pilot, {"start", "export", "dashboard", "quit"})  # a run trained: export and the dashboard join
        assert "images" not in shown, shown
        await pilot.press("i")  # left out of the footer, the key still works
        assert await wait_until(pilot, lambda: isinstance(app.screen, ImagesScreen), 10)
        await pilot.press("escape", "r")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.summaries, 30)
        await keys_fit(pilot, {"quit"})
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), 30)
        await keys_fit(pilot, {"export", "back", "quit"})
        await pilot.press("escape", "u")
        assert await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen), 10)
        await keys_fit(pilot, {"back", "quit"})
        for width in (56, 64):  # narrower still: other keys leave too, from the right; never back and quit
            await pilot.resize_terminal(width, 24)
            await keys_fit(pilot, {"back", "quit"})
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), 10)
        await keys_fit(pilot, {"back", "quit"})
    async with app_for(tmp_path, data_dir, config, runs_dir=tmp_path / "runs").run_test(size=(160, 40)) as pilot:
        await keys_fit(pilot, {"images", "inspect", "runs", "lr_find"})  # room for all
