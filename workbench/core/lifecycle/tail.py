"""JsonLinesTail: the rows appended to a JSON-lines file since the last read, as another process writes it.

Used for a run's metrics.jsonl (a dashboard following a run) and a child process's answer
file (the launcher). Reads only what is new, keeps a line still being written for the next
read, and starts over from the top when the file was replaced or cut (a resume repairs
metrics.jsonl by writing a new file). Only a regular file is opened, without blocking, and one
read takes at most READ_LIMIT bytes, so a FIFO or a huge file never hangs the reader (the same
guard as every other reader of a run folder: core/safe_read.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from workbench.core.errors import WorkbenchError
from workbench.core.safe_read import open_regular

READ_LIMIT = 8 * 1024 * 1024  # bytes per read; the rest comes with the next one


class JsonLinesTail:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._inode: tuple[int, int] | None = None
        self._partial = b""

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """(rows appended since the last read, whether the file started over: the rows are then
        the whole file again, and what was read before no longer holds)."""
        try:
            with open_regular(self.path) as handle:  # a pipe, a folder or a device reads as nothing yet
                info = os.fstat(handle.fileno())
                identity = (info.st_dev, info.st_ino)
                restarted = self._inode is not None and (identity != self._inode or info.st_size < self._offset)
                if restarted:
                    self._offset, self._partial = 0, b""
                self._inode = identity
                handle.seek(self._offset)
                data = handle.read(READ_LIMIT)
        except (OSError, WorkbenchError):
            return [], False
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # b"" after a whole line, else the part still being written
        return rows_of(lines), restarted


def rows_of(lines) -> list[dict[str, Any]]:
    """The lines (str or bytes) that are whole JSON objects, in order; others are skipped."""
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
