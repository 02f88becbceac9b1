"""ImagePreview: a PNG drawn with half blocks, exact colours, scaled only by whole factors."""

from __future__ import annotations

from dataclasses import dataclass

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from workbench.core.shown import shown
from workbench.ui.workers import DecodedImage

HALF_BLOCK = "▀"  # foreground paints the top pixel, background the bottom one


@dataclass(frozen=True)
class Scale:
    """Whole-number nearest-neighbour scaling: shrink keeps every `shrink`-th pixel."""

    shrink: int = 1
    enlarge: int = 1

    def describe(self) -> str:
        if self.shrink > 1:
            return f"1:{self.shrink}, every {_ordinal(self.shrink)} pixel"
        if self.enlarge > 1:
            return f"{self.enlarge}:1, each pixel {self.enlarge}×{self.enlarge}"
        return "1:1, every pixel"

    def source(self, index: int) -> int:
        return index * self.shrink // self.enlarge


def fit_scale(width: int, height: int, columns: int, rows: int) -> Scale:
    """The scale that fits a width x height image into columns x (2 * rows) half-cells."""
    if columns <= 0 or rows <= 0 or width <= 0 or height <= 0:
        return Scale()
    capacity_y = rows * 2
    shrink = max(-(-width // columns), -(-height // capacity_y))
    if shrink > 1:
        return Scale(shrink=shrink)
    return Scale(enlarge=max(1, min(columns // width, capacity_y // height)))


class ImagePreview(ScrollView, can_focus=True):
    """Shows one decoded image, fitted to the panel or at a chosen whole-number zoom.

    The border subtitle gives the image's size and the scale used; arrows pan when zoomed in.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.image: DecodedImage | None = None
        self.message = "no image selected"
        self.fixed_scale: Scale | None = None  # None = fit to the panel
        # The scale the virtual size was laid out with; drawing must use the same one, even if
        # the widget was resized (possibly to nothing) and on_resize has not run yet.
        self._scale = Scale()
        self._rows: dict[int, Strip] = {}

    # ---- data in ------------------------------------------------------------------

    def show(self, image: DecodedImage | None, message: str = "") -> None:
        self.image = image
        self.message = shown(message) or ("no image selected" if image is None else "")
        self._relayout()

    def zoom_in(self) -> None:
        scale = self.scale
        self._zoom(Scale(shrink=scale.shrink - 1) if scale.shrink > 1 else Scale(enlarge=min(scale.enlarge + 1, 16)))

    def zoom_out(self) -> None:
        scale = self.scale
        self._zoom(Scale(enlarge=scale.enlarge - 1) if scale.enlarge > 1 else Scale(shrink=scale.shrink + 1))

    def zoom_to_fit(self) -> None:
        self._zoom(None)

    def zoom(self, step: int) -> None:
        """The + / - / 0 keys: one step in, one step out, or back to fitting the panel."""
        if step > 0:
            self.zoom_in()
        elif step < 0:
            self.zoom_out()
        else:
            self.zoom_to_fit()

    def _zoom(self, scale: Scale | None) -> None:
        self.fixed_scale = scale
        self._relayout()

    @property
    def scale(self) -> Scale:
        """The scale the image is drawn at now."""
        return self._scale

    def _chosen_scale(self) -> Scale:
        if self.fixed_scale is not None:
            return self.fixed_scale
        if self.image is None:
            return Scale()
        return fit_scale(self.image.width, self.image.height, self.size.width, self.size.height)

    # ---- layout -------------------------------------------------------------------

    def on_resize(self) -> None:
        if self.fixed_scale is None:
            self._relayout()

    def _relayout(self) -> None:
        self._rows = {}
        image, scale = self.image, self._chosen_scale()
        self._scale = scale
        if image is None:
            self.virtual_size = Size(0, 0)
            self.border_subtitle = ""
        else:
            width = -(-image.width * scale.enlarge // scale.shrink)
            height = -(-image.height * scale.enlarge // scale.shrink)
            self.virtual_size = Size(width, -(-height // 2))
            fit = "" if self.fixed_scale else ", fitted"
            self.border_subtitle = f"{image.width}×{image.height} px · {scale.describe()}{fit} · + - 0 zoom"
        self.refresh()

    # ---- drawing ------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if self.image is None:
            text = self.message if y == 0 else ""
            return Strip([Segment(text[:width], self.rich_style)]).extend_cell_length(width, self.rich_style)
        scroll_x, scroll_y = self.scroll_offset
        row = y + scroll_y
        if row >= self.virtual_size.height:
            return Strip.blank(width, self.rich_style)
        if row not in self._rows:
            self._rows[row] = self._draw_row(row)
        return self._rows[row].crop(scroll_x, scroll_x + width).extend_cell_length(width, self.rich_style)

    def _draw_row(self, row: int) -> Strip:
        """Half-block cells for image rows 2*row and 2*row+1 (after scaling)."""
        image, scale = self.image, self.scale
        assert image is not None
        shown_w = self.virtual_size.width
        shown_h = -(-image.height * scale.enlarge // scale.shrink)
        top_y = scale.source(2 * row)
        bottom_y = scale.source(2 * row + 1) if 2 * row + 1 < shown_h else None
        segments: list[Segment] = []
        run_key, run_length = None, 0
        for column in range(shown_w):
            x = scale.source(column)
            key = (image.pixel(x, top_y), image.pixel(x, bottom_y) if bottom_y is not None else None)
            if key == run_key:
                run_length += 1
                continue
            if run_key is not None:
                segments.append(Segment(HALF_BLOCK * run_length, _style(*run_key)))
            run_key, run_length = key, 1
        if run_key is not None:
            segments.append(Segment(HALF_BLOCK * run_length, _style(*run_key)))
        return Strip(segments)


def _style(top: tuple[int, int, int], bottom: tuple[int, int, int] | None) -> Style:
    return Style(
        color=Color.from_rgb(*top),
        bgcolor=Color.from_rgb(*bottom) if bottom is not None else None,
    )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
