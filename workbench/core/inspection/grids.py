"""Exact-pixel PNG grids and confusion-matrix PNGs, each with a JSON sidecar, without a UI.

Image viewers auto-adjust brightness, so what a network saw is judged from files whose
pixels are exactly its input: de-normalised with the run's one mean/std (never rescaled
per image or per grid), enlarged only by an integer nearest-neighbour factor, and placed
at integer pixel boxes that the sidecar records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from workbench.core.atomic import write_atomic, write_json_atomic
from workbench.core.metrics import per_class_accuracy

SHEET_GREY = (128, 128, 128)  # neutral mid grey between cards; boxes are exact anyway
TITLE_BAR = (32, 32, 32)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
CORRECT_GREEN = (27, 122, 52)
WRONG_RED = (190, 24, 24)
NO_PREDICTION = (56, 56, 56)
GRID_LINE = (225, 225, 225)
ZERO_COUNT = (185, 185, 185)
DIAGONAL_DARK = (8, 69, 148)  # confusion shading: white -> this blue on the diagonal
CONFUSED_DARK = (165, 15, 21)  # and white -> this red off the diagonal
# zlib level 1, not PIL's 6: a 1356x1040 predictions grid is written in 40 ms rather than 92 (the
# training thread waits for it) and is 15% bigger; PNG is lossless at every level.
PNG_LEVEL = 1

MIN_CELL_PX = 64  # auto scale enlarges until an image is at least this many pixels
MAX_COLUMNS = 16
FRAME_PX = 3  # coloured frame around each image, outside its exact box
GAP_PX = 8
MARGIN_PX = 10
TEXT_PX = 12
TITLE_PX = 14
MAX_LABEL_WIDTH_PX = 160  # longer class names are cut with an ellipsis


@dataclass
class Cell:
    index: int  # index into the data set split it came from
    label: int  # true class
    source: str | None = None  # source file when there is one
    prediction: int | None = None
    confidence: float | None = None  # probability of the prediction, 0..1


def auto_scale(height: int, width: int) -> int:
    """The integer factor that makes an image at least MIN_CELL_PX on its longer side: 32->2, 28->3, 96->1."""
    return max(1, math.ceil(MIN_CELL_PX / max(height, width)))


def auto_columns(count: int) -> int:
    return max(1, min(MAX_COLUMNS, math.ceil(math.sqrt(count))))


# ---------------------------------------------------------------- grids of images


def save_grid(
    path: Path,
    images: torch.Tensor,
    cells: Sequence[Cell],
    classes: Sequence[str],
    *,
    title: str = "",
    scale: int = 0,
    columns: int = 0,
    meta: dict | None = None,
) -> Path:
    """Write uint8 (N,C,H,W) images (C in {1,3}) as a labelled PNG grid plus a JSON sidecar.

    Writes `path` and `path.with_suffix('.json')` atomically and returns the sidecar path.
    scale 0 picks auto_scale; columns 0 picks about sqrt(N), at most MAX_COLUMNS. Each
    image sits, enlarged by exactly `scale`, in a frame whose colour marks the prediction
    (green ok, red WRONG, dark grey none), over a strip of text that says the same in words.
    """
    path = Path(path)
    _check_grid_input(images, cells, scale, columns)
    count, channels, height, width = images.shape
    scale = scale or auto_scale(height, width)
    columns = min(columns or auto_columns(count), count)
    rows = math.ceil(count / columns)
    font = _font(TEXT_PX)
    line_px = TEXT_PX + 3

    strips = [_strip_lines(cell, classes) for cell in cells]
    image_w, image_h = width * scale, height * scale
    widest_text = max(font.getlength(line.replace("\t", "")) for lines in strips for line in lines)
    card_w = max(image_w + 2 * FRAME_PX, min(math.ceil(widest_text) + 8, MAX_LABEL_WIDTH_PX))
    card_h = FRAME_PX + image_h + max(len(lines) for lines in strips) * line_px + 5
    caption = f"{height}x{width} px shown at x{scale} (nearest neighbour), pixels exact"
    bar_h = TITLE_PX + 14
    grid_w = columns * card_w + (columns - 1) * GAP_PX
    title_w = _font(TITLE_PX).getlength(title) + font.getlength(caption) + 3 * GAP_PX
    sheet_w = 2 * MARGIN_PX + max(grid_w, math.ceil(title_w))
    sheet_h = bar_h + MARGIN_PX + rows * card_h + (rows - 1) * GAP_PX + MARGIN_PX

    sheet = Image.new("RGB", (sheet_w, sheet_h), SHEET_GREY)
    draw = ImageDraw.Draw(sheet)
    _draw_title_bar(draw, sheet_w, bar_h, title, caption)
    enlarged = _enlarge_rgb(images, scale)
    boxes = []
    for number, (cell, lines) in enumerate(zip(cells, strips)):
        card_left = MARGIN_PX + (number % columns) * (card_w + GAP_PX)
        card_top = bar_h + MARGIN_PX + (number // columns) * (card_h + GAP_PX)
        colour = _verdict_colour(cell)
        draw.rectangle((card_left, card_top, card_left + card_w - 1, card_top + card_h - 1), fill=colour)
        left, top = card_left + (card_w - image_w) // 2, card_top + FRAME_PX
        sheet.paste(Image.fromarray(enlarged[number]), (left, top))
        boxes.append([left, top, left + image_w, top + image_h])
        for line_number, line in enumerate(lines):
            main, _, kept = line.partition("\t")
            text = _fit(main, font, card_w - 6 - font.getlength(kept)) + kept
            draw.text((card_left + card_w // 2, top + image_h + 3 + line_number * line_px), text, fill=WHITE, font=font, anchor="ma")

    sidecar = {
        "file": path.name,
        "title": title,
        "scale": scale,
        "cell_size": [height, width],
        "classes": list(classes),
        "meta": meta,
        "cells": [_cell_record(cell, box, classes) for cell, box in zip(cells, boxes)],
    }
    return _write_png_and_sidecar(path, sheet, sidecar)


def _check_grid_input(images: torch.Tensor, cells: Sequence[Cell], scale: int, columns: int) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images shaped (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("no images to draw")
    if len(cells) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(cells)} cells")
    if scale < 0 or columns < 0:
        raise ValueError("scale and columns must be 0 (auto) or positive")


def _enlarge_rgb(images: torch.Tensor, scale: int):
    """(N,C,H,W) uint8 -> numpy (N, H*scale, W*scale, 3), gray as R=G=B, by repetition only."""
    pixels = images.detach().cpu().expand(-1, 3, -1, -1) if images.shape[1] == 1 else images.detach().cpu()
    pixels = pixels.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()


def _class_name(classes: Sequence[str], index: int | None) -> str | None:
    if index is None:
        return None
    return str(classes[index]) if 0 <= index < len(classes) else str(index)


def _strip_lines(cell: Cell, classes: Sequence[str]) -> list[str]:
    true_name = _class_name(classes, cell.label)
    if cell.prediction is None:
        return [true_name]
    percent = "" if cell.confidence is None else f" ({cell.confidence * 100:.0f}%)"
    verdict = "ok" if cell.prediction == cell.label else "WRONG"
    # The confidence comes after a tab: a long class name is cut, never the confidence.
    return [f"true: {true_name}", f"pred: {_class_name(classes, cell.prediction)}\t{percent}", verdict]


def _verdict_colour(cell: Cell) -> tuple[int, int, int]:
    if cell.prediction is None:
        return NO_PREDICTION
    return CORRECT_GREEN if cell.prediction == cell.label else WRONG_RED


def _cell_record(cell: Cell, box: list[int], classes: Sequence[str]) -> dict:
    return {
        "index": cell.index,
        "source": cell.source,
        "label": cell.label,
        "label_name": _class_name(classes, cell.label),
        "prediction": cell.prediction,
        "prediction_name": _class_name(classes, cell.prediction),
        "confidence": cell.confidence,
        "box": box,
    }


# ---------------------------------------------------------------- confusion matrix


def save_confusion(path: Path, matrix: torch.Tensor, classes: Sequence[str], *, title: str = "") -> Path:
    """Write a (K, K) count matrix (rows true, columns predicted) as a PNG plus a JSON sidecar.

    Shading is fixed, never rescaled: each cell's colour is its share of the true class's
    images (row fraction), white at 0 going linearly to blue on the diagonal and to red
    off it, so confusions stand out. Counts are written in cells large enough to hold them
    (K up to about 20); right of the matrix sit per-class accuracy and the class's count.
    Returns the sidecar path.
    """
    path = Path(path)
    counts = torch.as_tensor(matrix).detach().cpu().to(torch.int64)
    size = counts.shape[0]
    if counts.ndim != 2 or counts.shape[1] != size or len(classes) != size:
        raise ValueError(f"expected a square matrix matching {len(classes)} classes, got {tuple(counts.shape)}")
    support = counts.sum(dim=1)
    fractions = counts.double() / support.clamp(min=1).unsqueeze(1).double()
    accuracy = per_class_accuracy(counts)
    total = int(support.sum())
    overall = float(counts.diagonal().sum()) / total if total else 0.0

    cell = max(10, min(48, 560 // size))
    label_font = _font(max(7, min(TEXT_PX, cell - 2)))
    count_font = _font(TEXT_PX) if cell >= 26 else None
    line_px = label_font.size + 3
    names = [_fit(str(name), label_font, MAX_LABEL_WIDTH_PX) for name in classes]
    names_px = math.ceil(max(label_font.getlength(name) for name in names))
    axis_font = _font(TEXT_PX)
    bar_h = TITLE_PX + 14
    grid_left = MARGIN_PX + TEXT_PX + 8 + names_px + 6
    grid_top = bar_h + MARGIN_PX + TEXT_PX + 8 + names_px + 6
    grid_px = size * cell
    accuracy_left = grid_left + grid_px + GAP_PX
    accuracy_w = max(cell, math.ceil(label_font.getlength("100.0%")) + 8)
    support_left = accuracy_left + accuracy_w + 4
    support_w = math.ceil(label_font.getlength(str(int(support.max())))) + 8
    legend_h = TEXT_PX + 12
    caption = f"accuracy {overall * 100:.2f}% of {total}"
    title_w = _font(TITLE_PX).getlength(title) + axis_font.getlength(caption) + 3 * GAP_PX
    sheet_w = max(support_left + support_w + MARGIN_PX, math.ceil(title_w) + 2 * MARGIN_PX,
                  MARGIN_PX + _legend_width(axis_font) + MARGIN_PX)
    sheet_h = grid_top + grid_px + GAP_PX + legend_h + MARGIN_PX

    sheet = Image.new("RGB", (sheet_w, sheet_h), WHITE)
    draw = ImageDraw.Draw(sheet)
    _draw_title_bar(draw, sheet_w, bar_h, title, caption)
    draw.rectangle((grid_left - 1, grid_top - 1, grid_left + grid_px, grid_top + grid_px), fill=GRID_LINE)
    boxes = []
    for row in range(size):
        top = grid_top + row * cell
        draw.text((grid_left - 6, top + cell // 2), names[row], fill=BLACK, font=label_font, anchor="rm")
        _draw_vertical_text(sheet, names[row], label_font, grid_left + row * cell + (cell - line_px) // 2, grid_top - 6, BLACK)
        row_boxes = []
        for column in range(size):
            left = grid_left + column * cell
            box = [left, top, left + cell - 1, top + cell - 1]  # 1 px of grid line on the right and bottom
            fraction = float(fractions[row, column])
            dark = DIAGONAL_DARK if row == column else CONFUSED_DARK
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=_shade(dark, fraction))
            value = int(counts[row, column])
            if count_font is not None and count_font.getlength(str(value)) <= cell - 4:
                ink = ZERO_COUNT if value == 0 else _ink_on(fraction)
                draw.text(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2), str(value), fill=ink, font=count_font, anchor="mm")
            row_boxes.append(box)
        boxes.append(row_boxes)
        accuracy_box = (accuracy_left, top, accuracy_left + accuracy_w - 1, top + cell - 2)
        draw.rectangle(accuracy_box, fill=_shade(DIAGONAL_DARK, accuracy[row]))
        ink = _ink_on(accuracy[row])
        centre = top + (cell - 1) // 2
        draw.text((accuracy_left + accuracy_w - 4, centre), f"{accuracy[row] * 100:.1f}%", fill=ink, font=label_font, anchor="rm")
        draw.text((support_left + support_w - 4, centre), str(int(support[row])), fill=BLACK, font=label_font, anchor="rm")
    _draw_vertical_text(sheet, "accuracy", label_font, accuracy_left + (accuracy_w - line_px) // 2, grid_top - 6, BLACK)
    _draw_vertical_text(sheet, "images", label_font, support_left + (support_w - line_px) // 2, grid_top - 6, BLACK)
    draw.text((grid_left + grid_px // 2, bar_h + MARGIN_PX), "predicted class", fill=BLACK, font=axis_font, anchor="ma")
    true_bottom = grid_top + (grid_px + math.ceil(axis_font.getlength("true class"))) // 2
    _draw_vertical_text(sheet, "true class", axis_font, MARGIN_PX, true_bottom, BLACK)
    _draw_legend(sheet, draw, MARGIN_PX, grid_top + grid_px + GAP_PX, axis_font)

    sidecar = {
        "file": path.name,
        "title": title,
        "classes": [str(name) for name in classes],
        "matrix": counts.tolist(),
        "per_class_accuracy": accuracy,
        "support": support.tolist(),
        "accuracy": overall,
        "shading": "row fraction, white at 0 to rgb(8,69,148) on the diagonal and rgb(165,15,21) off it, linear",
        "boxes": boxes,  # boxes[true][predicted] = [left, top, right, bottom), exclusive
        "accuracy_boxes": [[accuracy_left, grid_top + row * cell, accuracy_left + accuracy_w, grid_top + (row + 1) * cell - 1] for row in range(size)],
    }
    return _write_png_and_sidecar(path, sheet, sidecar, indent=2 if size <= 20 else None)


def _shade(dark: tuple[int, int, int], fraction: float) -> tuple[int, int, int]:
    fraction = min(max(fraction, 0.0), 1.0)
    return tuple(round(255 + (channel - 255) * fraction) for channel in dark)


def _ink_on(fraction: float) -> tuple[int, int, int]:
    """Black text on light shading, white on dark; the switch is where both read about equally."""
    return BLACK if fraction < 0.6 else WHITE


LEGEND_ITEMS = ((DIAGONAL_DARK, "correct"), (CONFUSED_DARK, "confused as"))
LEGEND_NOTE = "share of the true class"


def _legend_width(font) -> int:
    """How wide _draw_legend draws: the sheet is made at least this wide, so nothing is cut."""
    items = sum(70 + math.ceil(font.getlength(f"{words} 0..100%")) + 16 for _, words in LEGEND_ITEMS)
    return items + math.ceil(font.getlength(LEGEND_NOTE))


def _draw_legend(sheet: Image.Image, draw: ImageDraw.ImageDraw, left: int, top: int, font) -> None:
    x = left
    for dark, words in LEGEND_ITEMS:
        for step in range(64):
            draw.line((x + step, top + 2, x + step, top + TEXT_PX + 4), fill=_shade(dark, step / 63))
        draw.text((x + 70, top + 3), f"{words} 0..100%", fill=BLACK, font=font)
        x += 70 + math.ceil(font.getlength(f"{words} 0..100%")) + 16
    draw.text((x, top + 3), LEGEND_NOTE, fill=(90, 90, 90), font=font)


# ---------------------------------------------------------------- text and files


def _font(size: int) -> ImageFont.FreeTypeFont:
    # Loaded per call (0.2 ms), not cached: a shared FreeType face is not safe across threads.
    return ImageFont.load_default(size=size)


def _fit(text: str, font, max_px: float) -> str:
    """Cut text with an ellipsis until it fits in max_px."""
    if font.getlength(text) <= max_px:
        return text
    while text and font.getlength(text + "…") > max_px:
        text = text[:-1]
    return text + "…"


def _draw_title_bar(draw: ImageDraw.ImageDraw, width: int, height: int, title: str, caption: str) -> None:
    draw.rectangle((0, 0, width - 1, height - 1), fill=TITLE_BAR)
    draw.text((MARGIN_PX, height // 2), title, fill=WHITE, font=_font(TITLE_PX), anchor="lm")
    draw.text((width - MARGIN_PX, height // 2), caption, fill=(200, 200, 200), font=_font(TEXT_PX), anchor="rm")


def _draw_vertical_text(sheet: Image.Image, text: str, font, left: int, bottom: int, fill) -> None:
    """Text reading bottom to top, starting at (left, bottom)."""
    length = math.ceil(font.getlength(text)) + 2
    mask = Image.new("L", (length, font.size + 3), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    mask = mask.transpose(Image.Transpose.ROTATE_90)
    sheet.paste(fill, (left, bottom - mask.height), mask)


def _write_png_and_sidecar(path: Path, sheet: Image.Image, sidecar: dict, indent: int | None = 2) -> Path:
    sidecar_path = path.with_suffix(".json")
    write_atomic(path, lambda file: sheet.save(file, format="PNG", compress_level=PNG_LEVEL))
    write_json_atomic(sidecar_path, sidecar, indent=indent)
    return sidecar_path
