"""Whether a queue runner lives, told by an flock it holds for its whole life, never by a pid.

A runner's id is host:pid:nonce; its lock file is .queue/runners/<id>.lock. The OS drops the lock
when the runner dies, so a pid reused by another process never passes for a living runner.
"""

from __future__ import annotations

import os
import socket
import stat
import uuid
from pathlib import Path

from workbench.core.atomic import disk_error
from workbench.core.safe_read import NotReadable, ensure_folder

RUNNERS = "runners"  # in the queue's log folder: one lock file per live runner


def runner_id() -> str:
    """host:pid:nonce, unique even when the pid is reused after the runner died."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RunnerLock:
    """An flock a queue runner holds for its whole life on .queue/runners/<id>.lock. The OS drops
    it when the runner dies, so whether a runner lives never rests on a pid that may be reused."""

    def __init__(self, log_dir: Path, runner: str) -> None:
        self.path = Path(log_dir) / RUNNERS / (runner.replace(":", "_").replace("/", "_") + ".lock")
        self._descriptor: int | None = None

    def acquire(self) -> None:
        ensure_folder(self.path.parent)
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_NONBLOCK, 0o644)
        except OSError as error:
            raise disk_error(error, self.path) from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise NotReadable(f"{self.path} is not a regular file; it was put there by hand, remove it")
        self._descriptor = descriptor
        _flock(self._descriptor)

    def release(self) -> None:
        if self._descriptor is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
            os.close(self._descriptor)
            self._descriptor = None

    def holder_alive(self) -> bool | None:
        """Whether the runner of this lock lives: None when it left no lock file (an older runner)."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # a pipe put there must not block
        except FileNotFoundError:
            return None
        except OSError:
            return False  # a lock file no runner could hold
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                return False
            return not _flock(descriptor, wait=False)
        finally:
            os.close(descriptor)


def _flock(descriptor: int, wait: bool = True) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
