"""TrainControl: how another thread pauses, resumes or stops a running fit()."""

from __future__ import annotations

import threading


class TrainControl:
    """Thread-safe switches the engine checks between steps.

    Stop finishes the current step, then the engine saves a checkpoint and returns.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def toggle_pause(self) -> bool:
        """Pause if running, resume if paused; returns True when now paused."""
        if self.paused:
            self.resume()
        else:
            self.pause()
        return self.paused

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # a paused run must wake up to stop

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        """Block the training thread while paused; returns at once otherwise."""
        while not self._running.wait(poll_s):
            pass
