"""Who owns a run folder: an flock on the folder, and the sentence a second trainer gets.

flock belongs to the open folder, so the OS drops it the moment the holder dies, whatever
its pid was: a stale pid in `.lock` never decides anything, and never is named as training.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from workbench.core.atomic import write_text_atomic
from workbench.core.errors import RunBusy, WorkbenchError
from workbench.core.safe_read import KB, text_or_none

LOCK_FILE = ".lock"
OWNER_LIMIT = 64 * KB


class RunLock:
    """An exclusive flock on the run folder itself, held by whoever trains the run.

    flock belongs to the open folder, so the OS drops it the moment the holder dies, whatever
    its pid was: a stale pid in a file never decides anything. Taking it writes nothing (a
    refused action writes no byte); `record_owner`, once the action is sure to go ahead, writes
    `<run>/.lock` with who holds it, for the sentence a second trainer gets.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._descriptor: int | None = None

    def check_free(self) -> None:
        """Raise RunBusy, naming the holder, when another process (or thread) trains this run."""
        descriptor = self._open()
        if descriptor is None:
            return
        try:
            if not _try_lock(descriptor):
                raise RunBusy(self._busy_sentence())
        finally:
            os.close(descriptor)

    def acquire(self) -> None:
        """Take the lock (RunBusy when another holds it); writes nothing."""
        if self._descriptor is not None:
            return
        descriptor = self._open()
        if descriptor is None:
            raise WorkbenchError(f"run folder {self.run_dir} does not exist")
        if not _try_lock(descriptor):
            os.close(descriptor)
            raise RunBusy(self._busy_sentence())
        self._descriptor = descriptor

    def record_owner(self) -> None:
        """Say in .lock who holds the lock (only while holding it)."""
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                 "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]}
        write_text_atomic(self.path, json.dumps(owner) + "\n")

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the folder releases the flock
            self._descriptor = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def _open(self) -> int | None:
        try:
            return os.open(self.run_dir, os.O_RDONLY)
        except FileNotFoundError:
            return None

    def _busy_sentence(self) -> str:
        owner: dict[str, Any] = {}
        try:
            owner = json.loads(text_or_none(self.path, OWNER_LIMIT) or "{}")
        except ValueError:
            pass
        if not isinstance(owner, dict):
            owner = {}
        who = f"process {owner['pid']}" if owner.get("pid") else "another process"
        here = not owner.get("host") or owner["host"] == socket.gethostname()
        if not here:
            who += f" on {owner['host']}"
        elif isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
            # .lock names the trainer before this one, now dead: the lock's holder is someone else.
            return (f"{self.run_dir.name} is in use by another process (the trainer .lock names, process "
                    f"{owner['pid']}, has ended); wait for it to finish, or find it with `fuser {self.run_dir}`")
        since = ""
        if isinstance(owner.get("since"), (int, float)):
            since = f", since {datetime.fromtimestamp(owner['since']):%Y-%m-%d %H:%M}"
        command = f" ({owner['command']})" if owner.get("command") else ""
        return (
            f"{self.run_dir.name} is being trained by {who}{command}{since}; wait for it to "
            "finish, or stop it first (x in its app, Ctrl-C or SIGTERM to its process)"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or a number no process can have: say nothing false)
    return True


def _try_lock(descriptor: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run folders are not guarded
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def is_locked(run_dir: Path) -> bool:
    """True while some process (this one included) trains the run."""
    try:
        RunLock(run_dir).check_free()
    except RunBusy:
        return True
    return False
