"""Timing on the device's own timeline, and reading small device values back without waiting.

A training loop that called .item() each step would make the host wait for the GPU every
step. DeviceClock stamps the device timeline (CUDA events; perf_counter elsewhere) and
Readout copies small tensors to pinned host memory in the background, handing them out once
they have arrived, so metrics reach the UI a few times a second while no step ever syncs.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterator

import torch


class DeviceClock:
    """Time on the device's own timeline: CUDA events on a GPU (taking one never waits), and
    perf_counter elsewhere, where every op has finished by the time Python moves on."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def stamp(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def reached(self, stamp: Any) -> bool:
        return stamp.query() if self.cuda else True

    def wait(self, stamp: Any) -> None:
        if self.cuda:
            stamp.synchronize()

    def seconds(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) / 1000 if self.cuda else end - start

    def synchronized_now(self) -> float:
        """perf_counter once all queued device work is done: the ends of a timed section."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()
        return time.perf_counter()


class Readout:
    """Small device tensors copied to the host in the background, handed out once they arrive.

    On a GPU, `send` queues a non-blocking copy into pinned memory followed by an event;
    `ready(wait=False)` yields only the copies whose event has passed, in the order sent.
    """

    def __init__(self, clock: DeviceClock) -> None:
        self.clock = clock
        self.queue: deque[tuple[torch.Tensor, tuple, Any]] = deque()

    def send(self, values: torch.Tensor, note: tuple) -> None:
        if self.clock.cuda:
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
        else:
            host = values.detach().to("cpu", copy=True)
        self.queue.append((host, note, self.clock.stamp()))

    def ready(self, wait: bool) -> Iterator[tuple[list[float], tuple, Any]]:
        while self.queue:
            host, note, stamp = self.queue[0]
            if not self.clock.reached(stamp):
                if not wait:
                    return
                self.clock.wait(stamp)
            self.queue.popleft()
            yield host.tolist(), note, stamp
