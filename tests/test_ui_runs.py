"""The runs list and a past run in the app: the table at narrow widths, names and data shown as text."""

from __future__ import annotations

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
