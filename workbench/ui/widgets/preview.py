"""ImagePreview: a PNG drawn with half blocks, exact colours, scaled only by whole factors."""

from __future__ import annotations

from dataclasses import dataclass

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from workbench.ui.jobs import DecodedImage

HALF_BLOCK = "▀"  # foreground paints the top pixel, background the bottom one
CAPTION_ROWS = 1


@dataclass(frozen=True)
class Scale:
    """Whole-number nearest-neighbour scaling: shrink keeps every `shrink`-th pixel."""

    shrink: int = 1
    enlarge: int = 1

    def describe(self) -> str:
        if self.shrink > 1:
            return f"shown 1:{self.shrink} (every {_ordinal(self.shrink)} pixel; too big to fit)"
        if self.enlarge > 1:
            return f"shown {self.enlarge}:1 (each pixel as {self.enlarge}×{self.enlarge})"
        return "shown 1:1 (every pixel)"

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


class ImagePreview(Widget):
    """Shows one decoded image; a caption line gives its size and the scale used."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.image: DecodedImage | None = None
        self.message = "no image selected"
        self._strips: list[Strip] = []
        self._drawn_for: tuple[int, int] | None = None

    def show(self, image: DecodedImage | None, message: str = "") -> None:
        self.image = image
        self.message = message or ("no image selected" if image is None else "")
        self._drawn_for = None
        self.refresh()

    @property
    def scale(self) -> Scale:
        if self.image is None:
            return Scale()
        rows = self.size.height - CAPTION_ROWS
        return fit_scale(self.image.width, self.image.height, self.size.width, rows)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return container.height

    def render_line(self, y: int) -> Strip:
        size = (self.size.width, self.size.height)
        if self._drawn_for != size:
            self._strips = self._draw()
            self._drawn_for = size
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width, self.rich_style)

    def _draw(self) -> list[Strip]:
        width = self.size.width
        if self.image is None:
            return [Strip([Segment(self.message[:width], self.rich_style)]).extend_cell_length(width)]
        image, scale = self.image, self.scale
        caption = f"{image.width}×{image.height} px · {scale.describe()}"
        strips = [Strip([Segment(caption[:width], self.rich_style)]).extend_cell_length(width)]
        shown_w = min(image.width * scale.enlarge // scale.shrink, width)
        shown_h = -(-image.height * scale.enlarge // scale.shrink)
        for row in range(0, shown_h, 2):
            top_y = scale.source(row)
            bottom_y = scale.source(row + 1) if row + 1 < shown_h else None
            strips.append(self._line(image, scale, shown_w, top_y, bottom_y).extend_cell_length(width))
        return strips

    def _line(self, image: DecodedImage, scale: Scale, shown_w: int, top_y: int, bottom_y: int | None) -> Strip:
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
