"""Engine events -> Textual messages, posted from the training thread without flooding the UI.

Step samples (a few a second, or many when steps are fast) go into a buffer; the UI is told
"steps are ready" at most once until it drains the buffer, and when it falls behind the buffer
merges neighbouring samples instead of growing. Every other event (epochs, checkpoints,
images, notices, the end of the run) is posted as its own message and never dropped.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from textual.message import Message

from workbench.core.events import Event, StepMetrics

if TYPE_CHECKING:
    from textual.message_pump import MessagePump

MAX_BUFFERED_STEPS = 256  # beyond this, pairs of old samples merge into one


class StepsReady(Message):
    """Step samples are waiting in the bridge; drain them with `EngineBridge.take_steps`."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StepsReady)


class EngineEvent(Message):
    """One engine event other than a step sample, in the order the engine sent it."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class EngineBridge:
    """The `events` callable handed to fit(); safe to call from any thread."""

    def __init__(self, target: MessagePump) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._steps: list[StepMetrics] = []
        self._notified = False
        self.merged = 0  # samples folded into others because the UI fell behind

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepMetrics):
            self._buffer_step(event)
        else:
            self._target.post_message(EngineEvent(event))

    def take_steps(self) -> list[StepMetrics]:
        """Everything buffered so far, oldest first (UI thread)."""
        with self._lock:
            steps, self._steps = self._steps, []
            self._notified = False
        return steps

    def _buffer_step(self, step: StepMetrics) -> None:
        with self._lock:
            self._steps.append(step)
            if len(self._steps) > MAX_BUFFERED_STEPS:
                self._steps = _merge_pairs(self._steps[:-1]) + self._steps[-1:]
                self.merged += 1
            if self._notified:
                return
            self._notified = True
        self._target.post_message(StepsReady())


def _merge_pairs(steps: list[StepMetrics]) -> list[StepMetrics]:
    """Halve a run of samples: each pair becomes its later sample with the pair's mean loss/acc."""
    merged = []
    for index in range(0, len(steps) - 1, 2):
        first, second = steps[index], steps[index + 1]
        merged.append(
            replace(
                second,
                loss=(first.loss + second.loss) / 2,
                acc=(first.acc + second.acc) / 2,
            )
        )
    if len(steps) % 2:
        merged.append(steps[-1])
    return merged
