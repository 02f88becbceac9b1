"""InspectScreen: a finished run's confusion matrix, per-class accuracy, model, data and predictions."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Header,
    Input,
    Label,
    Static,
    TabbedContent,
    TabPane,
)
from textual.worker import Worker, WorkerState

from workbench.core.catalog import arch_label
from workbench.core.shown import shown
from workbench.core.errors import WorkbenchError
from workbench.core.wording import count as counted
from workbench.ui import formatting as fmt
from workbench.ui import inspect_workers
from workbench.ui.inspect_workers import Guess, Inspection
from workbench.ui.workers import DecodedImage
from workbench.ui.widgets.preview import ImagePreview
from workbench.ui.widgets.footer import FittedFooter
from workbench.ui.widgets.review_tables import (
    ClassCounts,
    ClassScores,
    ConfusionTable,
    LayerTable,
    TopClasses,
)

TABS = ("confusion", "per-class", "model", "data", "predict")
GALLERY_MIN_ROWS = 12  # a cell's gallery in fewer rows is unreadable: its images open one by one
TAB_KEYS = Binding.Group("Tabs", compact=True)
# what gets the focus when a tab is shown
TAB_FOCUS = {
    "confusion": "#confusion-table", "per-class": "#class-scores", "model": "#layers",
    "data": "#class-counts", "predict": "#predict-path",
}
TAB_ACTIONS = {"sort": ("per-class",), "samples": ("data",), "zoom": ("confusion", "data"), "tiles": ("confusion", "data")}


class InspectionLoaded(Message):
    def __init__(self, inspection: Inspection) -> None:
        super().__init__()
        self.inspection = inspection


class CellWritten(Message):
    def __init__(self, cell: tuple[int, int], image: DecodedImage | None) -> None:
        super().__init__()
        self.cell = cell
        self.image = image


class SamplesWritten(Message):
    def __init__(self, image: DecodedImage) -> None:
        super().__init__()
        self.image = image


class Predicted(Message):
    def __init__(self, path: Path, passes: int, guesses: list[Guess], seen) -> None:
        super().__init__()
        self.path = path
        self.passes = passes
        self.guesses = guesses
        self.seen = seen  # the image as the model received it


class InspectScreen(Screen):
    """One run, loaded once in a worker (model + test predictions); 1-5 switch tabs, escape goes back."""

    CSS_PATH = "../inspect.tcss"
    TITLE = "workbench"
    SUB_TITLE = "inspect"
    BINDINGS = [
        Binding("1", "show_tab('confusion')", "Confusion", id="inspect-confusion", group=TAB_KEYS,
                tooltip="Confusion matrix; enter on a cell shows its images"),
        Binding("2", "show_tab('per-class')", "Per class", id="inspect-per-class", group=TAB_KEYS,
                tooltip="Test accuracy per class"),
        Binding("3", "show_tab('model')", "Model", id="inspect-model", group=TAB_KEYS,
                tooltip="Layers, output shapes and parameters"),
        Binding("4", "show_tab('data')", "Data", id="inspect-data", group=TAB_KEYS,
                tooltip="Class counts, image size, normalisation"),
        Binding("5", "show_tab('predict')", "Predict", id="inspect-predict", group=TAB_KEYS,
                tooltip="Classify an image file with the best model"),
        Binding("a", "sort", "Sort", id="inspect-sort", tooltip="Weakest class first / class order"),
        Binding("g", "samples", "Sample grid", id="inspect-samples", tooltip="Write images/samples.png: raw training images"),
        Binding("plus,equals_sign", "zoom(1)", "Zoom", id="inspect-zoom-in", key_display="+ -", tooltip="Zoom in"),
        Binding("minus", "zoom(-1)", "Zoom out", id="inspect-zoom-out", show=False),
        Binding("0", "zoom(0)", "Fit", id="inspect-zoom-fit", show=False, tooltip="Fit the image to the panel"),
        Binding("t", "tiles", "Tiles", id="inspect-tiles", tooltip="Each image of the gallery alone, at a zoom"),
        Binding("escape", "back", "Back", id="inspect-back", tooltip="Leave the text field, else close this screen"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.inspection: Inspection | None = None
        self.selected_cell: tuple[int, int] | None = None
        self.cell_path: Path | None = None  # the drill-down PNG on show
        self.samples_path: Path | None = None
        self.load_problem = ""  # why the run could not be loaded, once that is known
        self.tiles_opened = False  # a tile screen pushed and not yet closed (pushing is not immediate)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"loading {shown(self.run_dir.name)}: model and test predictions…", id="inspect-status", markup=False)
        with TabbedContent(initial="confusion", id="inspect-tabs"):
            with TabPane("1 Confusion", id="confusion"):
                yield ConfusionTable(id="confusion-table")
                yield Static("", id="cell-info", classes="inspect-note", markup=False)
                yield Static("", id="cell-path", classes="inspect-note", markup=False)
                yield ImagePreview(id="cell-preview")
            with TabPane("2 Per class", id="per-class"):
                yield ClassScores(id="class-scores")
            with TabPane("3 Model", id="model"):
                yield LayerTable(id="layers")
            with TabPane("4 Data", id="data"):
                with Horizontal(id="data-body"):
                    with Vertical(id="data-facts-column"):
                        yield ClassCounts(id="class-counts")
                        yield Static("", id="data-facts", classes="inspect-note", markup=False)
                    with Vertical(id="samples-column"):
                        yield ImagePreview(id="samples-preview")
                        yield Static("", id="samples-path", classes="inspect-note", markup=False)
            with TabPane("5 Predict", id="predict"):
                with Horizontal(id="predict-form"):
                    yield Label("image file", classes="field-label")
                    yield Input(placeholder="path to a PNG or JPEG, then enter", id="predict-path")
                    yield Label("passes", classes="field-label")
                    yield Input("0", type="integer", id="predict-passes", tooltip="Monte-Carlo dropout passes; 0 = off")
                yield Static("", id="predict-message", classes="inspect-note", markup=False)
                with Horizontal(id="predict-body"):
                    yield TopClasses(id="predict-table")
                    yield ImagePreview(id="predict-preview")
        yield FittedFooter()

    def on_mount(self) -> None:
        self.sub_title = escape(shown(f"inspect · {self.run_dir.name}"))
        self.query_one("#confusion-table").border_title = "true class ↓  predicted class →"
        self.query_one("#class-scores").border_title = "test accuracy per class"
        self.query_one("#layers").border_title = "model (best checkpoint)"
        self.query_one("#class-counts").border_title = "images per class"
        self.query_one("#predict-table").border_title = "most likely classes"
        self.query_one("#cell-preview", ImagePreview).show(None, "enter on a cell shows its test images")
        self.query_one("#samples-preview", ImagePreview).show(None, "g writes a grid of raw training images")
        self.query_one("#predict-message", Static).update(
            "type an image path and press enter; passes > 0 uses Monte-Carlo dropout"
        )
        self.query_one(TabbedContent).loading = True
        self.query_one("#confusion-table").focus()
        self._load()

    @property
    def current_run(self) -> Path:
        return self.run_dir

    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    # ---- keys -----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        tabs = TAB_ACTIONS.get(action)
        return tabs is None or (self.is_mounted and self.active_tab in tabs)

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.call_after_refresh(self.query_one(TAB_FOCUS[tab]).focus)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self.refresh_bindings()

    def action_back(self) -> None:
        if isinstance(self.focused, Input):  # leave the field first, so escape never loses typing
            self.query_one("#predict-table").focus()
        elif len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_sort(self) -> None:
        self.query_one(ClassScores).toggle_order()

    def action_zoom(self, step: int) -> None:
        preview_id = "#cell-preview" if self.active_tab == "confusion" else "#samples-preview"
        self.query_one(preview_id, ImagePreview).zoom(step)

    def action_tiles(self) -> None:
        from workbench.core.inspection.tiles import has_tiles

        image = self.query_one("#cell-preview" if self.active_tab == "confusion" else "#samples-preview", ImagePreview).image
        if image is None or not has_tiles(image.path):
            self.notify("No gallery shown yet: enter on a cell (or g) writes one.", severity="warning")
            return
        self._open_tiles(image.path)

    def _open_tiles(self, png: Path) -> None:
        """The tile screen for a gallery, once (a push takes effect later: two crashed the app)."""
        from workbench.ui.screens.tiles import TileScreen

        if not self.tiles_opened:
            self.tiles_opened = True
            self.app.push_screen(TileScreen(png), lambda _: setattr(self, "tiles_opened", False))

    def action_samples(self) -> None:
        if self.inspection is None:
            self.notify(self._not_loaded(), severity="warning")
            return
        self.query_one("#samples-preview", ImagePreview).show(None, "writing images/samples.png…")
        self._write_samples(self.inspection)

    # ---- workers --------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="inspect-load", description="loading the run")
    def _load(self) -> None:
        self.post_message(InspectionLoaded(inspect_workers.load_inspection(self.run_dir)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="inspect-cell", description="writing the cell's images")
    def _write_cell(self, inspection: Inspection, cell: tuple[int, int]) -> None:
        self.post_message(CellWritten(cell, inspect_workers.write_cell(inspection, *cell)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="inspect-samples", description="writing the sample grid")
    def _write_samples(self, inspection: Inspection) -> None:
        self.post_message(SamplesWritten(inspect_workers.write_samples(inspection)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="inspect-predict", description="predicting")
    def _predict(self, inspection: Inspection, path: Path, passes: int) -> None:
        self.post_message(Predicted(path, passes, *inspect_workers.predict_image(inspection, path, passes)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every failure of this screen's workers becomes a sentence where its result would be."""
        group = event.worker.group
        if event.state != WorkerState.ERROR or not group.startswith("inspect-"):
            return
        event.stop()  # reported here, in place; the app need not repeat it
        if event.worker.is_cancelled:
            return  # a newer request replaced it
        text = inspect_workers.reason(event.worker.error)
        if group == "inspect-load":
            self.load_problem = text
            self.query_one(TabbedContent).loading = False
            self._status(f"cannot inspect {self.run_dir.name}: {text}", error=True)
        elif group == "inspect-cell":
            self.query_one("#cell-preview", ImagePreview).show(None, f"could not write the cell's images: {text}")
        elif group == "inspect-samples":
            self.query_one("#samples-preview", ImagePreview).show(None, f"could not write the sample grid: {text}")
        else:
            self._predict_message(text, error=True)

    # ---- results --------------------------------------------------------------------

    def on_inspection_loaded(self, message: InspectionLoaded) -> None:
        found = self.inspection = message.inspection
        self.query_one(TabbedContent).loading = False
        correct = sum(row[i] for i, row in enumerate(found.confusion))
        total = sum(sum(row) for row in found.confusion)
        accuracy = fmt.percent(correct / total) if total else "-"
        data_name = Path(found.data.name).name or found.data.name  # a folder by its own name, not its path
        self._status(  # the run's name is in the header already: one line at 80 columns
            f"{arch_label(found.arch)} on {data_name} · best checkpoint · "
            f"test accuracy {accuracy} ({fmt.count(correct)} of {fmt.count(total)})"
        )
        table = self.query_one(ConfusionTable)
        table.show(found.classes, found.confusion, room=self.size.width)
        self._describe_cell()
        self.query_one(ClassScores).show(found.scores)
        self.query_one(LayerTable).show(found.layers, found.total_params)
        data = found.data
        self.query_one(ClassCounts).show(data.classes, data.train_counts, data.test_counts, data.val_counts)
        self.query_one("#data-facts", Static).update(_data_facts(found))

    @on(DataTable.CellHighlighted, "#confusion-table")
    def _describe_cell(self) -> None:
        table = self.query_one(ConfusionTable)
        self.query_one("#cell-info", Static).update(table.describe_cell(table.cursor_coordinate))

    @on(DataTable.CellSelected, "#confusion-table")
    def _cell_selected(self, event: DataTable.CellSelected) -> None:
        table, inspection = self.query_one(ConfusionTable), self.inspection
        cell = table.cell(event.coordinate)
        if inspection is None or cell is None:
            return
        true, predicted = cell
        preview = self.query_one("#cell-preview", ImagePreview)
        self.selected_cell, self.cell_path = cell, None
        preview.border_title = ""
        self.query_one("#cell-path", Static).update("")
        if table.matrix[true][predicted] == 0:
            preview.show(None, self._empty_cell(cell))
            return
        names = inspection.classes
        preview.show(None, f"writing the images of true {names[true]} predicted as {names[predicted]}…")
        self._write_cell(inspection, cell)

    def on_cell_written(self, message: CellWritten) -> None:
        if message.cell != self.selected_cell:
            return  # another cell was chosen while this one was written
        preview = self.query_one("#cell-preview", ImagePreview)
        if message.image is None:
            preview.show(None, self._empty_cell(message.cell))
            return
        self.cell_path = message.image.path
        preview.border_title = escape(shown(message.image.path.name))
        preview.show(message.image)
        self.query_one("#cell-path", Static).update(f"written to {fmt.short_path(message.image.path)}")
        if preview.content_size.height < GALLERY_MIN_ROWS and self.is_current and self.active_tab == "confusion":
            # A short terminal leaves the gallery a character or so per image: show each image
            # alone at a zoom instead (escape comes back here), unless the user moved to another tab.
            self._open_tiles(message.image.path)

    def on_samples_written(self, message: SamplesWritten) -> None:
        preview = self.query_one("#samples-preview", ImagePreview)
        self.samples_path = message.image.path
        preview.border_title = escape(shown(message.image.path.name))
        preview.show(message.image)
        self.query_one("#samples-path", Static).update(f"written to {fmt.short_path(message.image.path)}")

    @on(Input.Submitted, "#predict-path, #predict-passes")
    def _predict_requested(self) -> None:
        if self.inspection is None:
            self._predict_message(self._not_loaded(), error=True)
            return
        try:
            path = inspect_workers.image_path(self.query_one("#predict-path", Input).value)
            passes = inspect_workers.parse_passes(self.query_one("#predict-passes", Input).value)
        except WorkbenchError as error:
            self._predict_message(str(error), error=True)
            return
        self._predict_message(f"classifying {path.name}…")
        self._predict(self.inspection, path, passes)

    def on_predicted(self, message: Predicted) -> None:
        how = f"mean ± spread over {message.passes} Monte-Carlo dropout passes" if message.passes else "one plain pass"
        self._predict_message(f"{fmt.short_path(message.path)}: top {counted(len(message.guesses), 'class')} ({how})")
        self.query_one(TopClasses).show(message.guesses, message.passes)
        seen = message.seen
        self.query_one("#predict-preview", ImagePreview).show(seen)
        self.query_one("#predict-preview").border_title = escape(shown(f"{message.path.name}") + f" as the model sees it: {seen.width}×{seen.height}")

    # ---- small helpers --------------------------------------------------------------

    def _empty_cell(self, cell: tuple[int, int]) -> str:
        true, predicted = (self.inspection.classes[i] for i in cell)
        return f"no test images were classified as {predicted} when they were {true}"

    def _not_loaded(self) -> str:
        if self.load_problem:
            return f"the run could not be loaded ({self.load_problem}); escape goes back"
        return "still loading the run; try again in a moment"

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#inspect-status", Static)
        status.update(shown(text))
        status.set_class(error, "error")

    def _predict_message(self, text: str, error: bool = False) -> None:
        message = self.query_one("#predict-message", Static)
        if error and not text.rstrip().endswith((".", "!", "?")):
            text += "."
        if error and "Monte-Carlo dropout does not apply" in text:
            text += " Set passes to 0 for a plain prediction."
        message.update(shown(text))
        message.set_class(error, "error")
        if error:
            self.query_one(TopClasses).clear()


def _data_facts(inspection: Inspection) -> str:
    data = inspection.data
    channels = {1: "1 channel (grey)", 3: "3 channels (RGB)"}.get(data.channels, f"{data.channels} channels")
    lines = [
        f"{shown(data.name)} · {data.image_size}×{data.image_size} px · {channels}",
        "mean " + "  ".join(f"{m:.3f}" for m in data.mean),
        "std  " + "  ".join(f"{s:.3f}" for s in data.std),
    ]
    own = [*data.mean, *data.std]
    used = [*inspection.mean, *inspection.std]
    if len(own) != len(used) or any(abs(a - b) > 1e-6 for a, b in zip(own, used)):  # not the data's own
        lines += ["the model sees the images normalised with other values (its starting weights', or none):",
                  "mean " + "  ".join(f"{m:.3f}" for m in inspection.mean),
                  "std  " + "  ".join(f"{s:.3f}" for s in inspection.std)]
    if data.skipped:
        lines.append(f"{fmt.count(data.skipped)} unreadable files skipped")
    lines.append("g writes images/samples.png: the first training images of each class, raw pixels")
    return "\n".join(lines)
