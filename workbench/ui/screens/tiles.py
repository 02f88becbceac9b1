"""TileScreen: one image of a grid alone, at a whole-number zoom in its exact colours (one image
pixel per half cell at 1:1), with its source file, label, prediction and probability, and the RGB
value under a cursor the arrows move. n / p go to the next or previous tile."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.geometry import Region
from textual.markup import escape
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static

from workbench.core.shown import shown
from workbench.ui.widgets.preview import ImagePreview
from workbench.ui.workers import DecodedImage
from workbench.ui.widgets.footer import FittedFooter


class TilesRead(Message):
    def __init__(self, tiles: list, problem: str = "") -> None:
        super().__init__()
        self.tiles = tiles
        self.problem = problem


class TileScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    TileScreen { align: center middle; }
    #tile-box { width: 90%; height: 90%; border: thick $accent; background: $surface; }
    #tile-info, #tile-pixel { height: auto; padding: 0 1; }
    #tile-image { height: 1fr; border: round $panel; }
    """
    BINDINGS = [
        Binding("n,right_square_bracket", "tile(1)", "Next tile", key_display="n p"),
        Binding("p,left_square_bracket", "tile(-1)", "Previous", show=False),
        Binding("left", "cursor(-1, 0)", "Cursor", key_display="arrows", show=False, priority=True),
        Binding("right", "cursor(1, 0)", "Cursor", show=False, priority=True),
        Binding("up", "cursor(0, -1)", "Cursor", show=False, priority=True),
        Binding("down", "cursor(0, 1)", "Cursor", show=False, priority=True),
        Binding("plus,equals_sign", "zoom(1)", "Zoom", key_display="+ -"),
        Binding("minus", "zoom(-1)", "Zoom out", show=False),
        Binding("escape", "dismiss", "Back"),
    ]

    def __init__(self, png: Path, start: int = 0) -> None:
        super().__init__(id="tile")
        self.png, self.number = png, start
        self.tiles: list = []
        self.cursor = (0, 0)

    def compose(self) -> ComposeResult:
        with Vertical(id="tile-box"):
            yield Static(f"reading the tiles of {shown(self.png.name)}…", id="tile-info", markup=False)
            yield ImagePreview(id="tile-image")
            yield Static("", id="tile-pixel", markup=False)
        yield FittedFooter()

    def on_mount(self) -> None:
        self._read(self.png)

    @work(thread=True, exclusive=True, exit_on_error=False, group="tiles", description="reading the tiles")
    def _read(self, png: Path) -> None:
        from workbench.core.errors import WorkbenchError
        from workbench.core.inspection.tiles import read_tiles

        try:
            self.post_message(TilesRead(read_tiles(png)))
        except (WorkbenchError, OSError, ValueError) as error:
            self.post_message(TilesRead([], str(error)))

    def on_tiles_read(self, message: TilesRead) -> None:
        self.tiles = message.tiles
        if not self.tiles:
            self.query_one("#tile-info", Static).update(shown(message.problem or f"{self.png.name} has no tiles"))
            return
        self.number = min(max(self.number, 0), len(self.tiles) - 1)
        self._show(keep_zoom=False)

    @property
    def tile(self):
        return self.tiles[self.number] if self.tiles else None

    def _show(self, keep_zoom: bool = True) -> None:
        tile = self.tile
        if tile is None:
            return
        x, y = self.cursor = (min(self.cursor[0], tile.width - 1), min(self.cursor[1], tile.height - 1))
        preview = self.query_one("#tile-image", ImagePreview)
        if not keep_zoom:
            preview.fixed_scale = None
        preview.show(DecodedImage(self.png, tile.width, tile.height, _with_cursor(tile, x, y)))
        scale = preview.scale  # zoomed past the panel: keep the cursor in view
        column, row = x * scale.enlarge // scale.shrink, y * scale.enlarge // scale.shrink // 2
        preview.scroll_to_region(Region(column, row, max(1, scale.enlarge), max(1, scale.enlarge // 2)), animate=False)
        preview.border_title = escape(f"tile {tile.number + 1} of {len(self.tiles)} · {tile.width}×{tile.height}")
        where = f"source {tile.source}" if tile.source else "from a built-in data set (no file)"
        self.query_one("#tile-info", Static).update(f"{shown(tile.describe())}\n{shown(where)}")
        r, g, b = tile.pixel(x, y)
        self.query_one("#tile-pixel", Static).update(
            f"pixel ({x}, {y}): RGB ({r}, {g}, {b}), as the file holds it (the cursor is drawn in the "
            "opposite colour) · arrows move it")

    def action_tile(self, step: int) -> None:
        if self.tiles:
            self.number = (self.number + step) % len(self.tiles)
            self._show()

    def action_cursor(self, dx: int, dy: int) -> None:
        tile = self.tile
        if tile is not None:
            self.cursor = (min(max(self.cursor[0] + dx, 0), tile.width - 1), min(max(self.cursor[1] + dy, 0), tile.height - 1))
            self._show()

    def action_zoom(self, step: int) -> None:
        self.query_one("#tile-image", ImagePreview).zoom(step)


def _with_cursor(tile, x: int, y: int) -> bytes:
    """The tile's pixels with the cursor's one pixel in its opposite colour (the info line gives the real value)."""
    pixels = bytearray(tile.rgb)
    offset = (y * tile.width + x) * 3
    pixels[offset:offset + 3] = bytes(255 - value for value in pixels[offset:offset + 3])
    return bytes(pixels)
