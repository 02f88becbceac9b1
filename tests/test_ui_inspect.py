"""Pilot-driven tests of the inspection screen on one tiny finished run: tabs, drill-down, predict, failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from textual.app import App
from textual.widgets import Input, Static, TabbedContent

from tests.support.ui import asynchronous, wait_until
from workbench.core import runs
from workbench.ui.screens.inspect import InspectScreen
from workbench.ui.widgets.review_tables import (
    ClassCounts,
    ClassScores,
    ConfusionTable,
    LayerTable,
    TopClasses,
)

SIZE = (120, 40)
CSS = Path(__file__).resolve().parent.parent / "workbench" / "ui" / "workbench.tcss"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    """One finished basic_cnn run on shapes (one epoch, CPU): about 20 s."""
    from workbench.core.config import RunConfig
    from workbench.core.training.engine import fit

    config = RunConfig.from_mapping(dict(
        dataset="shapes", arch="basic_cnn", epochs=1, batch_size=256, device="cpu",
        data_dir=str(data_dir), runs_dir=str(tmp_path_factory.mktemp("inspect-runs")), augment="none",
    ))
    return fit(config, lambda event: None)


class InspectApp(App):
    """Just the screen under test, on top of an empty default screen."""

    CSS_PATH = CSS

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def on_mount(self) -> None:
        self.push_screen(InspectScreen(self.run_dir))



async def loaded(pilot) -> InspectScreen:
    screen = pilot.app.screen
    assert isinstance(screen, InspectScreen)
    assert await wait_until(pilot, lambda: screen.inspection is not None), text_of(screen, "#inspect-status")
    await pilot.pause()
    return screen


def text_of(screen: InspectScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).content)


def plain(cell) -> str:
    return getattr(cell, "plain", str(cell))


@asynchronous
async def test_confusion_counts_match_the_review_and_enter_drills_into_a_cell(run_dir):
    from workbench.core.inspection.review import load_review

    expected = load_review(run_dir).confusion().tolist()
    app = InspectApp(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        table = screen.query_one(ConfusionTable)
        assert (table.row_count, len(table.columns)) == (10, 11)  # ten classes, then accuracy
        shown = [[int(plain(c).replace(",", "")) for c in table.get_row_at(r)[:10]] for r in range(10)]
        assert shown == expected
        assert "test accuracy" in text_of(screen, "#inspect-status")

        true, predicted = next(
            (t, p) for t in range(10) for p in range(10) if t != p and expected[t][p] > 0
        )
        assert app.focused is table
        await pilot.press(*["down"] * true, *["right"] * predicted)
        info = text_of(screen, "#cell-info")
        assert f"true {screen.inspection.classes[true]} predicted as {screen.inspection.classes[predicted]}" in info
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: screen.cell_path is not None)
        png = screen.cell_path
        assert png.is_file() and png.parent == run_dir / "images"
        assert png.name.startswith("confusion_") and "_as_" in png.name
        assert png.name in text_of(screen, "#cell-path")
        await pilot.pause(0.2)
        assert app.screen is screen  # room for the gallery: it is shown here


@pytest.mark.parametrize("width, longest", [(80, 7), (240, 18)])
@asynchronous
async def test_the_confusion_columns_name_the_classes_as_fully_as_the_width_allows(run_dir, width, longest):
    app = InspectApp(run_dir)
    async with app.run_test(size=(width, 40)) as pilot:
        screen = await loaded(pilot)
        table = screen.query_one(ConfusionTable)
        names = [plain(column.label).strip() for column in list(table.columns.values())[:10]]
        assert max(len(name) for name in names) == longest, names  # "horizontal stripes": 18 characters
        assert all(name == full or name.endswith("…") for name, full in zip(names, screen.inspection.classes))


@asynchronous
async def test_on_a_short_terminal_a_cells_images_open_one_by_one(run_dir):
    from workbench.ui.screens.tiles import TileScreen

    app = InspectApp(run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await loaded(pilot)
        table = screen.query_one(ConfusionTable)
        assert screen.query_one("#inspect-status").size.height == 1  # the run's name is in the header
        await pilot.press("enter")  # true class 0 predicted as 0: never empty on a trained run
        assert await wait_until(pilot, lambda: isinstance(app.screen, TileScreen), 30)
        assert table.matrix[0][0] > 0
        assert await wait_until(pilot, lambda: str(app.screen.query_one("#tile-image").border_title).startswith(
            "tile 1 of "), 30)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is screen, 5)
        assert screen.cell_path is not None and screen.cell_path.name in text_of(screen, "#cell-path")
        from workbench.ui.screens.inspect import CellWritten

        image = screen.query_one("#cell-preview").image  # enter twice, both galleries written at once:
        screen.post_message(CellWritten(screen.selected_cell, image))  # one tile screen (two crashed the app)
        screen.post_message(CellWritten(screen.selected_cell, image))
        assert await wait_until(pilot, lambda: isinstance(app.screen, TileScreen), 30)
        await pilot.pause(1.0)
        assert sum(isinstance(s, TileScreen) for s in app.screen_stack) == 1 and app.return_code is None
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is screen, 5)
        await pilot.press("2")
        await pilot.pause(0.3)
        scores = screen.query_one(ClassScores)  # every column, F1 the last, fits at 80 columns
        assert sum(column.get_render_width(scores) for column in scores.columns.values()) <= scores.size.width


@asynchronous
async def test_per_class_model_and_data_tabs_then_escape_goes_back(run_dir):
    app = InspectApp(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        tabs = screen.query_one(TabbedContent)

        await pilot.press("2")
        assert tabs.active == "per-class"
        scores = screen.query_one(ClassScores)
        assert scores.row_count == 10
        await pilot.press("a")
        accuracies = [float(plain(scores.get_row_at(r)[3]).rstrip("%")) for r in range(10)]
        assert accuracies == sorted(accuracies)

        await pilot.press("3")
        layers = screen.query_one(LayerTable)
        kinds = [plain(layers.get_row_at(r)[1]) for r in range(layers.row_count)]
        assert kinds.count("Conv2d") == 2
        assert plain(layers.get_row_at(layers.row_count - 1)[3]) == "62,958"

        await pilot.press("4")
        counts = screen.query_one(ClassCounts)
        assert counts.row_count == 11  # ten classes and the total
        # The splits the run used: what it trained on, what it held out to pick the best epoch, test.
        start = next(row for row in runs.read_metrics(run_dir) if row["type"] == "start")
        assert [str(column.label) for column in counts.columns.values()] == ["class", "train", "val", "test"]
        totals = [int(plain(cell).replace(",", "")) for cell in counts.get_row_at(10)[1:]]
        assert totals == [start["train_size"], start["val_size"], start["test_size"]] and start["val_size"] > 0
        assert "32×32 px" in text_of(screen, "#data-facts")
        await pilot.press("g")
        assert await wait_until(pilot, lambda: screen.samples_path is not None)
        assert screen.samples_path == run_dir / "images" / "samples.png" and screen.samples_path.is_file()

        await pilot.press("escape")
        assert not isinstance(app.screen, InspectScreen)


@asynchronous
async def test_the_model_tab_of_a_finetuned_run_says_when_each_layer_trains(run_dir, tmp_path):
    from workbench.core import runs
    from workbench.core.training.engine import fit

    config = runs.read_config(run_dir).replace(
        runs_dir=str(tmp_path / "runs"), init_from=str(run_dir), recipe="finetune", freeze_epochs=1, epochs=1)
    tuned = fit(config, lambda event: None)
    async with InspectApp(tuned).run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("3")
        layers = screen.query_one(LayerTable)
        assert [str(column.label) for column in layers.columns.values()][-1] == "trains"
        rows = {plain(layers.get_row_at(r)[0]).strip(): plain(layers.get_row_at(r)[-1]) for r in range(layers.row_count)}
        assert rows["11"] == "always (head)"  # basic_cnn's last Linear
        assert rows["0"] == "from epoch 2, 0.1× lr" and rows["1"] == ""  # a conv; its ReLU has nothing to train
        await pilot.press("4")
        assert "normalised with other values" not in text_of(screen, "#data-facts")  # the source run's: the same data
    async with InspectApp(run_dir).run_test(size=SIZE) as pilot:  # a standard run: no such column
        screen = await loaded(pilot)
        await pilot.press("3")
        assert "trains" not in [str(c.label) for c in screen.query_one(LayerTable).columns.values()]


@asynchronous
async def test_predict_lists_five_classes_and_says_why_it_cannot(run_dir, tmp_path):
    image = tmp_path / "some shape.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(image)
    app = InspectApp(run_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(pilot)
        await pilot.press("5")
        path_input = screen.query_one("#predict-path", Input)
        assert await wait_until(pilot, lambda: app.focused is path_input)
        top = screen.query_one(TopClasses)

        async def predict(path: str, passes: str) -> None:
            path_input.value = path
            screen.query_one("#predict-passes", Input).value = passes
            path_input.focus()
            await pilot.press("enter")

        await predict(f'"{image}"', "0")  # quotes, as a terminal pastes a dropped file
        assert await wait_until(pilot, lambda: top.row_count == 5)
        probabilities = [float(plain(top.get_row_at(r)[2]).rstrip("%")) for r in range(5)]
        assert probabilities == sorted(probabilities, reverse=True)

        await predict(str(image), "5")  # basic_cnn has no dropout layers
        assert await wait_until(pilot, lambda: "does not apply" in text_of(screen, "#predict-message"))
        assert "no dropout layers" in text_of(screen, "#predict-message") and top.row_count == 0
        assert "--mc-dropout" not in text_of(screen, "#predict-message")  # the app's words, not a flag's
        assert "Set passes to 0" in text_of(screen, "#predict-message")

        await predict(str(tmp_path / "missing.png"), "0")
        assert await wait_until(pilot, lambda: "does not exist" in text_of(screen, "#predict-message"))
        assert "\n" not in text_of(screen, "#predict-message")
        assert app.is_running and isinstance(app.screen, InspectScreen)


@asynchronous
async def test_a_folder_that_is_not_a_run_is_a_sentence_not_a_crash(tmp_path):
    app = InspectApp(tmp_path / "not-a-run")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert await wait_until(pilot, lambda: "cannot inspect" in text_of(screen, "#inspect-status"))
        assert not screen.query_one(TabbedContent).loading
        await pilot.press("5")
        assert await wait_until(pilot, lambda: isinstance(app.focused, Input))
        await pilot.press("enter")
        assert "could not be loaded" in text_of(screen, "#predict-message")
        assert app.is_running


def test_the_data_facts_say_when_the_model_sees_other_normalisation_than_the_datas_own():
    from types import SimpleNamespace

    from workbench.core.inspection.summary import DatasetSummary
    from workbench.ui.screens.inspect import _data_facts

    data = DatasetSummary("photos", ["cat", "dog"], [10, 10], [3, 3], 3, 224, (0.76, 0.65, 0.63), (0.2, 0.2, 0.2), 0)
    own = _data_facts(SimpleNamespace(data=data, mean=data.mean, std=data.std))
    assert "normalised with other values" not in own
    imagenet = _data_facts(SimpleNamespace(data=data, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    assert "normalised with other values" in imagenet and "0.485  0.456  0.406" in imagenet
