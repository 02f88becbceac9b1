"""EventLog: a RichLog that re-wraps its lines when its width changes.

RichLog wraps each line once, at the width it has when the line arrives; lines written
while the layout was still settling (or before the user widened the terminal) would stay
narrow. EventLog keeps the markup it was given and writes it again at the new width.
"""

from __future__ import annotations

from collections import deque

from textual.events import Resize
from textual.widgets import RichLog


class EventLog(RichLog):
    def __init__(self, *, max_lines: int = 2000, id: str | None = None) -> None:
        super().__init__(id=id, markup=True, wrap=True, max_lines=max_lines, min_width=20)
        self._markup: deque[str] = deque(maxlen=max_lines)
        self._wrapped_at = 0

    def reset(self) -> None:
        """Start empty (a new run)."""
        self._markup.clear()
        self.clear()

    def add(self, markup: str) -> None:
        self._markup.append(markup)
        self.write(markup)

    def on_resize(self, event: Resize) -> None:
        # RichLog's own handler (which runs too) flushes lines written before any size was known.
        width = event.size.width
        if width and self._wrapped_at and width != self._wrapped_at:
            self.rewrap()
        if width:
            self._wrapped_at = width

    def rewrap(self) -> None:
        """Write every line again at the width the log has now: lines that arrived while it was
        hidden were wrapped at its smallest width, and showing it again is no resize."""
        self.clear()
        for markup in self._markup:
            self.write(markup)
