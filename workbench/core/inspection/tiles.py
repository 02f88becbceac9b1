"""The tiles of an inspection grid, each as the image the model was given: the grid's JSON
sidecar names every tile's box in the PNG, its source file, label, prediction and confidence, and
the grid enlarged each image by a whole factor (nearest neighbour), so every `scale`-th pixel of a
box is exactly one pixel of the image."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.safe_read import MB, read_text

SIDECAR_LIMIT = 16 * MB


@dataclass(frozen=True)
class Tile:
    number: int  # its place in the grid, from 0
    width: int
    height: int
    rgb: bytes  # width * height * 3, row-major: the image's own pixels
    source: str | None  # the file it was read from (a folder data set), else None
    index: int | None  # its position in its split
    label: str | None
    prediction: str | None
    confidence: float | None

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        offset = (y * self.width + x) * 3
        return self.rgb[offset], self.rgb[offset + 1], self.rgb[offset + 2]

    def describe(self) -> str:
        parts = [f"true {self.label}" if self.label else "", f"split index {self.index}" if self.index is not None else ""]
        if self.prediction is not None:
            sure = f" {self.confidence:.1%}" if self.confidence is not None else ""
            verdict = "right" if self.prediction == self.label else "wrong"
            parts.append(f"predicted {self.prediction}{sure} ({verdict})")
        return " · ".join(part for part in parts if part)


def sidecar(png: Path) -> Path:
    return png.with_suffix(".json")


def has_tiles(png: Path) -> bool:
    """Whether the PNG is a grid with a sidecar naming its tiles."""
    try:
        return bool(json.loads(read_text(sidecar(png), SIDECAR_LIMIT)).get("cells"))
    except (OSError, ValueError, AttributeError, WorkbenchError):
        return False


def read_tiles(png: Path) -> list[Tile]:
    """Every tile of the grid at its own size; a sidecar that does not fit its PNG is one sentence."""
    import numpy as np
    from PIL import Image

    from workbench.core.safe_read import open_regular

    try:
        record = json.loads(read_text(sidecar(png), SIDECAR_LIMIT))
        scale = int(record["scale"])
        height, width = (int(v) for v in record["cell_size"])
        cells = list(record["cells"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WorkbenchError(f"{sidecar(png).name} does not describe the tiles of {png.name} ({error})") from None
    with open_regular(png, 256 * MB) as handle, Image.open(handle) as image:
        grid = np.asarray(image.convert("RGB"))  # (height, width, 3)
    tiles = []
    for number, cell in enumerate(cells):
        left, top = int(cell["box"][0]), int(cell["box"][1])
        if scale < 1 or left + width * scale > grid.shape[1] or top + height * scale > grid.shape[0]:
            raise WorkbenchError(f"{sidecar(png).name}: tile {number}'s box lies outside {png.name}")
        pixels = grid[top:top + height * scale:scale, left:left + width * scale:scale].tobytes()  # every scale-th
        tiles.append(Tile(number, width, height, pixels, cell.get("source"), cell.get("index"),
                          cell.get("label_name"), cell.get("prediction_name"), cell.get("confidence")))
    return tiles
