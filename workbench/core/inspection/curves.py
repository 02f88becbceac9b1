"""The LR finder's curve as a PNG: loss against the learning rate on a log axis, the suggestions marked."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from workbench.core.atomic import write_atomic

WIDTH, HEIGHT = 720, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 44, 56
RAW, SMOOTH, SUGGESTED, MINIMUM = (190, 190, 190), (31, 119, 180), (44, 160, 44), (255, 127, 14)


def save_lr_curve(path: Path, lrs: list[float], losses: list[float], smoothed: list[float],
                  suggestion: float | None, bolder: float | None, title: str) -> Path:
    """Raw loss (grey) and smoothed loss (blue) against lr; the y axis spans the smoothed curve
    from its minimum to its first value (a diverged tail is cut at the frame, never rescaled away)."""
    sheet = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=11)
    draw.text((LEFT, 12), title, fill=(0, 0, 0), font=font)
    plot = (LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM)
    draw.rectangle(plot, outline=(0, 0, 0))
    if len(lrs) < 2:
        draw.text((LEFT + 10, TOP + 10), "too few steps to draw a curve", fill=(0, 0, 0), font=font)
        write_atomic(Path(path), lambda handle: sheet.save(handle, format="PNG"))
        return Path(path)
    low_x, high_x = math.log10(lrs[0]), math.log10(lrs[-1])
    low_y = min(smoothed)
    high_y = max(smoothed[0], low_y + 1e-6)
    span_y = high_y - low_y
    low_y, high_y = low_y - 0.05 * span_y, high_y + 0.15 * span_y

    def point(lr: float, loss: float) -> tuple[float, float]:
        x = plot[0] + (math.log10(lr) - low_x) / max(high_x - low_x, 1e-12) * (plot[2] - plot[0])
        y = plot[3] - (loss - low_y) / (high_y - low_y) * (plot[3] - plot[1])
        return x, min(max(y, plot[1]), plot[3])

    for decade in range(math.floor(low_x), math.ceil(high_x) + 1):
        if low_x - 1e-9 <= decade <= high_x + 1e-9:
            x = point(10.0**decade, low_y)[0]
            draw.line((x, plot[1], x, plot[3]), fill=(235, 235, 235))
            draw.text((x, plot[3] + 4), f"1e{decade}", fill=(0, 0, 0), font=small, anchor="ma")
    for index in range(5):
        value = low_y + (high_y - low_y) * index / 4
        y = point(lrs[0], value)[1]
        draw.line((plot[0] - 4, y, plot[0], y), fill=(0, 0, 0))
        draw.text((plot[0] - 6, y), f"{value:.3g}", fill=(0, 0, 0), font=small, anchor="rm")
    draw.line([point(lr, loss) for lr, loss in zip(lrs, losses)], fill=RAW, width=1)
    draw.line([point(lr, loss) for lr, loss in zip(lrs, smoothed)], fill=SMOOTH, width=2)
    for lr, colour, words in ((suggestion, SUGGESTED, "suggested"), (bolder, MINIMUM, "bolder (steepest)")):
        if lr is not None and lrs[0] <= lr <= lrs[-1]:
            x = point(lr, low_y)[0]
            draw.line((x, plot[1], x, plot[3]), fill=colour, width=2)
            draw.text((x + 4, plot[1] + 4 + (14 if colour == MINIMUM else 0)), f"{words} {lr:.2g}", fill=colour, font=small)
    draw.text(((plot[0] + plot[2]) // 2, HEIGHT - 22), "learning rate (log scale)", fill=(0, 0, 0), font=small, anchor="ma")
    draw.text((8, TOP - 18), "loss (grey: per step, blue: smoothed)", fill=(0, 0, 0), font=small)
    write_atomic(Path(path), lambda handle: sheet.save(handle, format="PNG"))
    return Path(path)
