"""An event sink that keeps what the engine reports, and waiting for what another process does."""

from __future__ import annotations

import time


class Recorder:
    """An event sink that keeps every event, for assertions."""

    def __init__(self) -> None:
        self.events = []

    def __call__(self, event) -> None:
        self.events.append(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    def last(self, kind):
        found = self.of(kind)
        return found[-1] if found else None


def wait_for(condition, seconds: float = 30) -> bool:
    """Poll `condition` until it holds; False after `seconds` (another process or thread is doing the work)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class SkewedClock:
    """time.perf_counter that jumps `jump_s` ahead on demand: a long pause without waiting for it.

    Timing assertions then compare with the jump (hours), not with how fast this machine ran."""

    def __init__(self, monkeypatch, jump_s: float = 3600.0) -> None:
        self.jump_s = jump_s
        self.skew = 0.0
        real = time.perf_counter
        monkeypatch.setattr(time, "perf_counter", lambda: real() + self.skew)

    def jump(self) -> None:
        self.skew += self.jump_s
