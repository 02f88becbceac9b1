"""The one place where training tallies become StepMetrics and an epoch's train loss and accuracy.

The loop adds each step's loss and correct count to tensors on the device; a few times a
second the Meter sends a copy to the host through a Readout (no step ever waits for the GPU)
and reports the samples that have arrived. Times come from the device's own clock, minus the
time spent paused. A NaN or infinite loss is remembered on the device and raised when read.
In a data-parallel run each rank meters its own shard: step samples are this rank's (a sample
of the global batch, images counted for every rank), and an epoch's totals are summed over the
ranks once, at the epoch's end (`reduce`), so they cover the whole global batch of every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from workbench.core.errors import NonFiniteLoss
from workbench.core.events import Evaluating, EventSink, StepMetrics
from workbench.core.training.control import TrainControl
from workbench.core.training.device import gpu_memory_mb
from workbench.core.training.device_clock import DeviceClock, Readout

SAMPLE_INTERVAL_S = 0.3  # at most ~3 step samples a second reach the UI
EVAL_EVERY_S = 0.5  # a held-out pass reports its progress this often, once it has taken this long


@dataclass
class TrainTotals:
    """An epoch's training as read back from the device."""

    epoch: int
    global_step: int
    loss: float  # mean over the images of the epoch's steps (those since the resume, if resumed)
    acc: float
    images: int
    seconds: float  # on the device's clock, pauses excluded
    lr: float  # of the epoch's last step


@dataclass
class _Mark:
    """Running totals of one epoch at one point, with where the clocks stood."""

    kind: str  # "start", "step" or "epoch"
    epoch: int
    step: int
    global_step: int
    images: int
    lr: float
    paused_s: float
    stamp: Any
    loss_sum: float = 0.0
    correct: float = 0.0
    on_done: Callable[[TrainTotals], None] | None = None


class Meter:
    def __init__(
        self,
        emit: EventSink,
        device: torch.device,
        control: TrainControl,
        *,
        steps_per_epoch: int,
        total_steps: int,
        lr: Callable[[], float],
        batch_size: int,
        ranks: int = 1,
        reduce: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        self.emit, self.control = emit, control
        self.device = device
        self.clock = DeviceClock(device)
        self.readout = Readout(self.clock)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.lr, self.batch_size = lr, batch_size
        self.ranks, self.reduce = ranks, reduce  # reduce(tensor, op) sums a tally over the ranks
        self.host_started = time.perf_counter()
        self.paused_at_start = control.paused_s
        self.first_global_step: int | None = None
        self.epoch_starts: dict[int, _Mark] = {}
        self.previous: _Mark | None = None
        self.epoch = self.epoch_step = self.global_step = self.images = 0
        self._eval_started = self._eval_sent = 0.0  # the held-out pass under way, and its last row

    # ---- the loop's side: device work only ------------------------------------------------

    def start_epoch(self, epoch: int, epoch_step: int, global_step: int) -> None:
        if self.first_global_step is None:
            self.first_global_step = global_step
        self.epoch, self.epoch_step, self.global_step, self.images = epoch, epoch_step, global_step, 0
        self.step_lr = self.lr()
        self.sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss sum, correct
        self.first_bad = torch.full((1,), -1.0, dtype=torch.float64, device=self.device)
        self.epoch_starts[epoch] = self._mark("start")
        self.last_send = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one step (call before the schedule moves on, so the lr read is the step's own)."""
        count = labels.shape[0]
        self.step_lr = self.lr()
        loss = loss.detach().float()
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        self.sums += torch.stack([loss.double() * count, correct.double()])
        # Remember the first bad step on the device; reading it now would sync every step.
        bad = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, float(self.global_step), self.first_bad)
        self.images += count
        self.epoch_step += 1
        self.global_step += 1
        if time.perf_counter() - self.last_send >= SAMPLE_INTERVAL_S:
            self._send(self._mark("step"))
        self._collect(wait=False)

    def end_epoch(self, on_done: Callable[[TrainTotals], None] | None = None) -> TrainTotals | None:
        """The epoch's totals: at once (waiting for the device) without `on_done`, else handed to
        `on_done` once they arrive, while the next epoch's steps are already queued."""
        self._send(self._mark("step"))  # the epoch's last stretch as a sample: even a short epoch shows one
        if on_done is None:
            done: list[TrainTotals] = []
            self._send(self._mark("epoch", done.append), whole=True)
            self._collect(wait=True)
            return done[0]
        self._send(self._mark("epoch", on_done), whole=True)
        self._collect(wait=False)
        return None

    def flush(self) -> None:
        """Report everything sent so far (a stop mid-epoch, the end of the run)."""
        self._send(self._mark("step"))
        self._collect(wait=True)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.host_started - (self.control.paused_s - self.paused_at_start)

    def evaluating(self, split: str, done: int, total: int) -> None:
        """Progress through a held-out split: nothing for a pass shorter than EVAL_EVERY_S, then a
        row at most that often, and one at its end to close what was shown."""
        now = time.perf_counter()
        if not self._eval_started:
            self._eval_started, self._eval_sent = now, 0.0
        if done >= total:
            if self._eval_sent:
                self.emit(Evaluating(split, total, total))
            self._eval_started = 0.0
        elif now - max(self._eval_started, self._eval_sent) >= EVAL_EVERY_S:
            self._eval_sent = now
            self.emit(Evaluating(split, done, total))

    # ---- host side ---------------------------------------------------------------------

    def _mark(self, kind: str, on_done=None) -> _Mark:
        return _Mark(kind, self.epoch, self.epoch_step, self.global_step, self.images, self.step_lr,
                     self.control.paused_s, self.clock.stamp(), on_done=on_done)

    def _send(self, mark: _Mark, whole: bool = False) -> None:
        sums, first_bad = self.sums, self.first_bad
        if whole and self.reduce is not None:  # every rank ends the epoch at the same step
            sums, first_bad = self.reduce(sums), self.reduce(first_bad, op="max")
        self.readout.send(torch.cat([sums, first_bad]), mark)
        self.last_send = time.perf_counter()

    def _collect(self, wait: bool) -> None:
        for (loss_sum, correct, first_bad), mark, _ in self.readout.ready(wait):
            if first_bad >= 0:
                raise NonFiniteLoss(
                    f"the loss became NaN or infinite at step {int(first_bad) + 1} (lr {mark.lr:.3g}, "
                    f"batch size {self.batch_size}); lower the learning rate or use fp32, then start "
                    "again or resume from the last good checkpoint"
                )
            mark.loss_sum, mark.correct = loss_sum, correct
            if mark.kind == "epoch":
                mark.on_done(self._totals(mark))
            elif mark.images > self._before(mark).images:
                self._emit_step(mark)
            self.previous = mark

    def _before(self, mark: _Mark) -> _Mark:
        previous = self.previous
        return previous if previous is not None and previous.epoch == mark.epoch else self.epoch_starts[mark.epoch]

    def _seconds(self, start: _Mark, end: _Mark) -> float:
        return max(self.clock.seconds(start.stamp, end.stamp) - (end.paused_s - start.paused_s), 1e-9)

    def _emit_step(self, mark: _Mark) -> None:
        before = self._before(mark)
        images = mark.images - before.images
        elapsed = self.elapsed_s()
        done = max(mark.global_step - (self.first_global_step or 0), 1)
        event = StepMetrics(
            epoch=mark.epoch,
            step=mark.step,
            steps_per_epoch=self.steps_per_epoch,
            global_step=mark.global_step,
            loss=(mark.loss_sum - before.loss_sum) / images,
            acc=(mark.correct - before.correct) / images,
            lr=mark.lr,
            images_per_s=images * self.ranks / self._seconds(before, mark),
            elapsed_s=elapsed,
            eta_s=elapsed / done * max(self.total_steps - mark.global_step, 0),
            gpu_memory_mb=gpu_memory_mb(self.device),
        )
        self.emit(event)  # the engine's emit writes its row too

    def _totals(self, mark: _Mark) -> TrainTotals:
        images = max(mark.images * self.ranks, 1)  # an epoch mark's sums are the whole world's
        return TrainTotals(
            epoch=mark.epoch,
            global_step=mark.global_step,
            loss=mark.loss_sum / images,
            acc=mark.correct / images,
            images=mark.images * self.ranks,
            seconds=self._seconds(self.epoch_starts[mark.epoch], mark),
            lr=mark.lr,
        )
