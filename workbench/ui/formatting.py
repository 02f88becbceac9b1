"""Short human text for numbers the UI shows: durations, percentages, counts, paths."""

from __future__ import annotations

import os
from pathlib import Path

from workbench.core.shown import shown

SPLITS = {"val": "validation", "test": "test", "train": "train"}


def duration(seconds: float | None) -> str:
    """12s, 3m05s, 1h02m; '-' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def percent(fraction: float | None, digits: int = 1) -> str:
    if fraction is None or fraction < 0:
        return "-"
    return f"{fraction * 100:.{digits}f}%"


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def compact(value: int | None) -> str:
    """A count in at most 5 characters, 3 significant digits: 62,958 -> 63.0k, 11,173,962 -> 11.2M."""
    if value is None:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            scaled = value / limit
            return f"{scaled:.3g}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return str(value)


def rate(images_per_s: float | None) -> str:
    if not images_per_s:
        return "-"
    if images_per_s >= 10_000:
        return f"{images_per_s / 1000:.0f}k img/s"
    return f"{images_per_s:,.0f} img/s"


def short_path(path: Path, base: Path | None = None) -> str:
    """The path relative to the working folder when it is inside it, else as given; for showing
    only (a control character in a folder name becomes a visible escape)."""
    base = base or Path(os.getcwd())
    try:
        return shown(Path(path).resolve().relative_to(base.resolve()))
    except (ValueError, OSError):
        return shown(path)


def bar(fraction: float, width: int) -> str:
    """A left-aligned bar of eighth blocks, e.g. for per-class accuracy."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = int(round(fraction * width * 8))
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest].strip() if rest else ""
    return ("█" * full + partial).ljust(width)
