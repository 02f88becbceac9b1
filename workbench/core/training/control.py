"""TrainControl: how another thread pauses, resumes or stops a running fit()."""

from __future__ import annotations

import threading
import time


class TrainControl:
    """Thread-safe switches the engine checks between steps.

    Stop finishes the current step, then the engine saves a checkpoint and returns. The time
    spent paused is counted (`paused_s`), so no timing or speed the run reports includes it.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self._paused_total = 0.0
        self._paused_since: float | None = None
        self.reason = ""  # why a stop was asked for, when it was not the user ("SIGTERM", say)

    def pause(self) -> None:
        with self._lock:
            if self._paused_since is None:
                self._paused_since = time.perf_counter()
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
        """Block the training thread while paused; returns at once otherwise."""
        while not self._running.wait(poll_s):
            pass


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
