"""ImagesScreen: a run's inspection PNGs, newest first, with an exact-colour preview of one."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from workbench.core.shown import shown
from workbench.ui import formatting as fmt
from workbench.ui import workers
from workbench.ui.widgets.preview import ImagePreview
from workbench.ui.widgets.footer import FittedFooter

RESCAN_EVERY_S = 3.0  # training writes new images at epoch ends


class ImagesFound(Message):
    def __init__(self, run_dir: Path | None, files: list[workers.ImageFile]) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.files = files


class ImageDecoded(Message):
    def __init__(self, image: workers.DecodedImage | None, problem: str = "") -> None:
        super().__init__()
        self.image = image
        self.problem = problem


class ImagesScreen(Screen):
    """Lists run_dir/images/*.png; enter or moving the cursor previews, o opens a viewer."""

    TITLE = "workbench"
    SUB_TITLE = "images"
    BINDINGS = [
        Binding("o", "open", "Open", id="open-image", tooltip="Open the file in the system image viewer"),
        Binding("plus,equals_sign", "zoom(1)", "Zoom", id="zoom-in", key_display="+ -", tooltip="Zoom in (whole-number steps)"),
        Binding("minus", "zoom(-1)", "Zoom out", id="zoom-out", show=False),
        Binding("0", "zoom(0)", "Fit", id="zoom-fit", show=False, tooltip="Fit the image to the panel"),
        Binding("t", "tiles", "Tiles", id="tiles", tooltip="Each image of the grid alone: zoom, its file, label, "
                                                           "prediction and the RGB under a cursor"),
    ]

    def __init__(self, run_dir: Path | None, runs_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.runs_dir = runs_dir
        self.files: list[workers.ImageFile] = []
        self.selected: Path | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="images-body"):
            with Vertical(id="image-files"):
                yield DataTable(cursor_type="row", zebra_stripes=True, id="image-table")
                yield Static("", id="image-path", markup=False)
            yield ImagePreview(id="preview")
        yield FittedFooter()

    def on_mount(self) -> None:
        table = self.query_one("#image-table", DataTable)
        table.add_column("file (newest first)", key="name")
        table.add_column("pixels", key="size", width=9)  # fixed: up to 9999×9999, no re-layout as rows arrive
        table.border_title = "looking for images…"
        self.query_one(ImagePreview).border_title = "preview"
        table.focus()
        self._scan(self.run_dir)
        self.set_interval(RESCAN_EVERY_S, self._rescan)

    @property
    def current_run(self) -> Path | None:
        return self.run_dir

    def _rescan(self) -> None:
        if self.is_current:
            self._scan(self.run_dir)

    # ---- workers --------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan", description="looking for images")
    def _scan(self, run_dir: Path | None) -> None:
        if run_dir is None:
            run_dir = _latest_run_with_images(self.runs_dir)
        files = workers.scan_images(run_dir) if run_dir is not None else []
        self.post_message(ImagesFound(run_dir, files))

    @work(thread=True, exclusive=True, exit_on_error=False, group="decode", description="reading the image")
    def _decode(self, path: Path) -> None:
        try:
            self.post_message(ImageDecoded(workers.decode_png(path)))
        except (OSError, ValueError) as error:
            self.post_message(ImageDecoded(None, f"cannot read {path.name}: {error}"))

    @work(thread=True, exit_on_error=False, group="viewer", description="opening the viewer")
    def _open(self, path: Path) -> None:
        message = workers.open_in_viewer(path)
        self.app.call_from_thread(self.notify, message)

    # ---- results --------------------------------------------------------------------

    def on_images_found(self, message: ImagesFound) -> None:
        table = self.query_one("#image-table", DataTable)
        self.run_dir = message.run_dir
        if message.run_dir is None:
            table.border_title = "no runs with images yet"
            self.query_one(ImagePreview).show(None, f"no run in {fmt.short_path(self.runs_dir)} has images yet; train one first")
            return
        self.sub_title = escape(f"images · {shown(message.run_dir.name)}")
        table.border_title = f"{len(message.files)} images"
        if _signature(message.files) == _signature(self.files):
            return
        seen_before = dict(_signature(self.files))
        rewritten = any(  # the engine rewrites top_losses.png and confusion.png every epoch
            f.path == self.selected and f.path in seen_before and f.modified != seen_before[f.path]
            for f in message.files
        )
        self.files = message.files
        keep = self.selected
        with self.prevent(DataTable.RowHighlighted):
            table.clear()
            for file in message.files:
                table.add_row(Text(shown(file.path.name)), f"{file.width}×{file.height}", key=str(file.path))
        if not message.files:
            self.query_one(ImagePreview).show(None, f"{fmt.short_path(message.run_dir / 'images')} has no PNG files yet")
            return
        paths = [f.path for f in message.files]
        row = paths.index(keep) if keep in paths else 0
        with self.prevent(DataTable.RowHighlighted):
            table.move_cursor(row=row)
        self._select(paths[row], force=rewritten)

    @on(DataTable.RowHighlighted, "#image-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._select(Path(str(event.row_key.value)))

    def _select(self, path: Path, force: bool = False) -> None:
        if path == self.selected and not force:
            return
        self.selected = path
        self.query_one("#image-path", Static).update(fmt.short_path(path))
        self.query_one(ImagePreview).border_title = escape(shown(path.name))
        self._decode(path)

    def on_image_decoded(self, message: ImageDecoded) -> None:
        if message.image is not None and message.image.path != self.selected:
            return  # the cursor moved on while it was decoding
        self.query_one(ImagePreview).show(message.image, message.problem)

    def action_zoom(self, step: int) -> None:
        self.query_one(ImagePreview).zoom(step)

    def action_tiles(self) -> None:
        from workbench.core.inspection.tiles import has_tiles
        from workbench.ui.screens.tiles import TileScreen

        if self.selected is None or not has_tiles(self.selected):
            self.notify("This image is not a grid of images (no tiles to show).", severity="warning")
            return
        self.app.push_screen(TileScreen(self.selected))

    def action_open(self) -> None:
        if self.selected is None:
            self.notify("No image selected.", severity="warning")
            return
        self._open(self.selected)


def _signature(files: list[workers.ImageFile]) -> list[tuple[Path, float]]:
    return [(f.path, f.modified) for f in files]


def _latest_run_with_images(runs_dir: Path) -> Path | None:
    from workbench.core.runs import list_runs

    for summary in list_runs(runs_dir):
        if any((summary.path / "images").glob("*.png")):
            return summary.path
    return None
