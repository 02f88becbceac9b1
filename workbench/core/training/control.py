"""TrainControl: how another thread, or another process through the run's control file, pauses,
resumes or stops a running fit()."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from workbench.core.errors import WorkbenchError

CONTROL_FILE = "control"  # in the run folder: one word, "pause", "run" or "stop", written by a watcher
COMMANDS = ("pause", "run", "stop")
FILE_POLL_S = 0.25  # how often, at most, the training thread looks at the control file
BY_FILE = "asked through the run's control file"  # by `workbench watch`, or `echo pause > RUN/control`
STOP_GRACE_S = 30.0  # the longest a stop may take (the step, the checkpoint) before the run is abandoned
GRACE_VARIABLE = "WORKBENCH_STOP_GRACE_S"


class TrainControl:
    """Thread-safe switches the engine checks between steps.

    Stop finishes the current step, then the engine saves a checkpoint and returns. The time
    spent paused is counted (`paused_s`), so no timing or speed the run reports includes it.
    `on_pause_change(paused, why)` is called from the training thread when training really
    halts or goes on, whoever asked, so the run's rows (and every dashboard) say so.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self._paused_total = 0.0
        self._paused_since: float | None = None
        self.reason = ""  # why a stop was asked for, when it was not the user ("SIGTERM", say)
        self._file: Path | None = None
        self._file_seen: tuple[int, int] | None = None
        self._next_poll = 0.0
        self.on_pause_change: Callable[[bool, str], None] | None = None
        self._pause_reported = False
        self._asked_by = ""  # who asked for the current pause: "" (this process) or BY_FILE

    def follow_file(self, path: Path) -> None:
        """Also obey the words another process writes to `path` (the engine calls this once it
        owns the run folder); a word left by an earlier session is removed, not obeyed."""
        try:
            os.unlink(path)
        except OSError:
            pass
        self._file, self._file_seen = Path(path), None

    def pause(self, asked_by: str = "") -> None:
        with self._lock:
            if self._paused_since is None:
                self._paused_since = time.perf_counter()
                self._asked_by = asked_by
            self._running.clear()

    def resume(self) -> None:
        with self._lock:
            if self._paused_since is not None:
                self._paused_total += time.perf_counter() - self._paused_since
                self._paused_since = None
            self._running.set()

    def toggle_pause(self) -> bool:
        """Pause if running, resume if paused; returns True when now paused."""
        if self.paused:
            self.resume()
        else:
            self.pause()
        return self.paused

    def stop(self, reason: str = "") -> None:
        if reason and not self.reason:
            self.reason = reason
        self._stop.set()
        self.resume()  # a paused run must wake up to stop

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused_s(self) -> float:
        """Seconds spent paused so far, the current pause included."""
        with self._lock:
            ongoing = time.perf_counter() - self._paused_since if self._paused_since is not None else 0.0
            return self._paused_total + ongoing

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        """Block the training thread while paused; returns at once otherwise.
        The control file, when followed, is read here: between steps, and while paused."""
        self.poll_file()
        if self._running.is_set():
            return
        self.report_pause(True)
        while not self._running.wait(poll_s):
            self.poll_file()
        self.report_pause(False)

    def report_pause(self, paused: bool) -> None:
        """Tell `on_pause_change` that training halted or goes on (training thread only; once per
        change). Going on because of a stop is not reported: the run's end says it."""
        if paused == self._pause_reported or (not paused and self.stop_requested):
            return
        self._pause_reported = paused
        if self.on_pause_change is not None:
            self.on_pause_change(paused, self._asked_by if paused else "")

    def poll_file(self) -> None:
        """Read the followed control file (at most every FILE_POLL_S): pause, run or stop."""
        if self._file is None or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + FILE_POLL_S
        try:
            stat = os.stat(self._file)
            if (stat.st_mtime_ns, stat.st_size) == self._file_seen:
                return
            self._file_seen = (stat.st_mtime_ns, stat.st_size)
            word = self._file.read_text(encoding="utf-8", errors="replace").strip().lower()
        except OSError:
            return
        if word == "pause":
            self.pause(asked_by=BY_FILE)
        elif word == "run":
            self.resume()
        elif word == "stop":
            self.stop()


class StopAfterSteps(TrainControl):
    """Asks to stop once `steps` training steps are done (warm-ups that run the real loop).

    Steps are counted where the loop waits out a pause (once per step), so stop checks made
    elsewhere, such as between decoding batches, neither count nor stop anything early.
    """

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps_left = steps

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        self.steps_left -= 1

    @property
    def stop_requested(self) -> bool:
        return self.steps_left <= 0


def stop_grace_s() -> float:
    """STOP_GRACE_S, or the environment's WORKBENCH_STOP_GRACE_S (seconds, 0.1 to 3600)."""
    text = os.environ.get(GRACE_VARIABLE, "").strip()
    if not text:
        return STOP_GRACE_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.1 <= value <= 3600:
        raise WorkbenchError(f"{GRACE_VARIABLE}={text!r} is not a number of seconds in 0.1..3600")
    return value
