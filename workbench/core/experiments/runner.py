"""The queue runner: works through pending jobs, each a `workbench train` child process.

The runner decides what runs when; starting a job's trainer is handed in (`start_job`, the
launcher's: a complete config file, the job's id as the run's id, an answer of JSON lines),
so the runner learns the job's run folder from the trainer's start row and its failure from
the trainer's own error, never from a process table or a line of text.

Up to `parallel` jobs run at once; with more than one GPU each slot gets its own through
CUDA_VISIBLE_DEVICES. A job that was cut off (its runner killed, its trainer killed by a signal)
goes on from its run folder's checkpoint with `train --resume`. Stopping the runner (SIGINT or
SIGTERM, or `stop` from another thread) stops its trainers cleanly, each saving a checkpoint,
and puts their jobs back as pending, to be resumed by the next runner.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.core import exit_codes
from workbench.core.errors import WorkbenchError
from workbench.core.experiments.queue import Job, JobQueue
from workbench.core.experiments.runner_lock import RunnerLock, runner_id
from workbench.core.runs import read_status

POLL_S = 0.3
RECOVER_EVERY_S = 10.0  # how often a runner looks for jobs whose runner died (their trainers may outlive it)
KILL_AFTER_S = 45.0  # a trainer still alive this long after SIGTERM is killed (its own limit is 30 s)
MAX_ATTEMPTS = 3  # a job whose trainer keeps being killed is given up after this many starts
EXIT_OK, STOPPED_CODES = exit_codes.OK, exit_codes.STOPPED_CODES


class JobNotStartable(WorkbenchError):
    """This job cannot start, by its own fault (flags that make no run): it fails, the queue goes on.
    Any other WorkbenchError from starting a job is the queue folder's: the runner stops on it."""


@dataclass
class _Slot:
    index: int
    gpu: str
    job: Job | None = None
    child: Any = None  # the launcher's Child: .process, .run_dir(), .failure()
    started: float = 0.0
    stopping: bool = False
    stop_sent: float = 0.0
    killed: bool = False


@dataclass(frozen=True)
class JobEnded:
    """What the runner reports when a job leaves its slot."""

    job: Job
    state: str  # done, failed, stopped, or pending (put back, to be resumed)
    reason: str
    run_dir: str


@dataclass
class QueueRunner:
    queue: JobQueue
    start_job: Callable[[Job, str], Any]  # (job, gpu) -> a started Child
    parallel: int = 1
    gpus: tuple[str, ...] = ()
    on_event: Callable[[str], None] = lambda line: None  # a line for the terminal
    on_job_end: Callable[[JobEnded], None] = lambda ended: None
    kill_after_s: float = KILL_AFTER_S
    _stop: threading.Event = field(default_factory=threading.Event)
    _problem: WorkbenchError | None = None  # why this runner stopped taking jobs by itself

    def stop(self) -> None:
        """Stop taking jobs; running trainers get SIGTERM (they save a checkpoint)."""
        self._stop.set()

    def run(self) -> int:
        """Until the queue has no pending job left (or a stop); returns how many jobs ended here."""
        for job in self.queue.recover():
            self.on_event(f"job {job.id}: its runner is gone; it goes back to the queue")
        share_gpus = len(self.gpus) > 1
        slots = [_Slot(i, self.gpus[i % len(self.gpus)] if share_gpus else "") for i in range(max(1, self.parallel))]
        ended = 0
        runner = runner_id()
        lock = RunnerLock(self.queue.log_dir, runner)
        lock.acquire()  # held while this runner lives: another runner tells a dead one by it, not by a pid
        try:
            ended = self._work(slots, runner, ended)
        finally:
            lock.release()
        if self._problem is not None:
            raise self._problem
        return ended

    def _work(self, slots: list[_Slot], runner: str, ended: int) -> int:
        recovered = time.monotonic()
        while True:
            if time.monotonic() - recovered > RECOVER_EVERY_S:
                recovered = time.monotonic()
                for job in self.queue.recover():
                    self.on_event(f"job {job.id}: its runner is gone; it goes back to the queue")
            if not self._stop.is_set():
                for slot in slots:
                    if slot.child is None:
                        job = self.queue.claim(runner, slot.gpu)
                        if job is None:
                            break
                        if self._start(slot, job):
                            ended += 1  # it failed before it started
            for slot in slots:
                if slot.child is not None:
                    if self._stop.is_set() and not slot.stopping:
                        slot.stopping, slot.stop_sent = True, time.monotonic()
                        slot.child.process.send_signal(signal.SIGTERM)
                    elif slot.stopping and not slot.killed and time.monotonic() - slot.stop_sent > self.kill_after_s:
                        slot.killed = True  # it ignores SIGTERM (someone's code that never returns)
                        slot.child.process.kill()
                    self._find_run_dir(slot)
                    if slot.child.process.poll() is not None:
                        self._end(slot)
                        ended += 1
            if all(slot.child is None for slot in slots):
                if self._stop.is_set() or not self._has_pending():
                    return ended
                continue
            time.sleep(POLL_S) if self._stop.is_set() else self._stop.wait(POLL_S)

    def _has_pending(self) -> bool:
        return self.queue.has_pending()

    def _start(self, slot: _Slot, job: Job) -> bool:
        """Start the job's trainer in the slot; True when the job failed instead of starting."""
        try:
            if job.damaged:
                raise JobNotStartable(f"its row in the queue is damaged: {job.damaged}")
            slot.child = self.start_job(job, slot.gpu)
        except JobNotStartable as refused:
            self.queue.finish(job.id, "failed", None, str(refused))
            self.on_event(f"job {job.id}: failed ({refused})")
            self.on_job_end(JobEnded(job, "failed", str(refused), job.run_dir))
            return True
        except WorkbenchError as problem:  # the queue's own folder (a pipe at its log, a read-only disk)
            self.queue.finish(job.id, "pending", None, "")
            self._problem = problem
            self._stop.set()
            return False
        slot.job, slot.started, slot.stopping, slot.killed = job, time.time(), False, False
        gpu = f" on GPU {slot.gpu}" if slot.gpu else ""
        how = f"resuming {Path(job.run_dir).name}" if job.resumable else " ".join(job.args)
        self.on_event(f"job {job.id}{gpu}: {how}")
        return False

    def _find_run_dir(self, slot: _Slot) -> None:
        """The run folder this job's trainer works in, from its start row."""
        job = slot.job
        if job is None or job.run_dir or slot.child is None:
            return
        found = slot.child.run_dir()
        if found is not None:
            self.queue.set_run_dir(job.id, Path(found).resolve())
            slot.job = self.queue.get(job.id) or job

    def _end(self, slot: _Slot) -> None:
        job, child = slot.job, slot.child
        assert job is not None and child is not None
        self._find_run_dir(slot)
        job = self.queue.get(job.id) or job
        code = child.process.returncode
        state, reason = self._outcome(job, code, slot.stopping)
        if slot.killed:
            state, reason = "stopped", (f"killed: its trainer was still running {self.kill_after_s:g} s after "
                                        "SIGTERM; resume it by hand once the cause is found")
        if state == "failed" and not reason:
            reason = child.failure()
        self.queue.finish(job.id, state, code, reason)
        slot.job, slot.child = None, None
        self.on_event(f"job {job.id}: {state}" + (f" ({reason})" if reason else ""))
        self.on_job_end(JobEnded(job, state, reason, job.run_dir))

    def _outcome(self, job: Job, code: int, stopping: bool) -> tuple[str, str]:
        if code == EXIT_OK:
            return "done", ""
        if code in STOPPED_CODES:
            if stopping:
                return "pending", "the queue was stopped; it resumes from its checkpoint"
            return "stopped", "its run was stopped"
        if code < 0:  # killed by a signal (the OOM killer, say): go on from the checkpoint
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            if job.attempts < MAX_ATTEMPTS:
                return "pending", f"its trainer was killed ({name}); it resumes from its checkpoint"
            return "failed", f"its trainer was killed ({name}) {job.attempts} times"
        if job.run_dir:
            status, reason = read_status(Path(job.run_dir))
            if status == "failed" and reason:
                return "failed", reason
        return "failed", ""  # the trainer's own sentence, from its answer


def visible_gpus() -> tuple[str, ...]:
    """The GPUs a runner may hand out: CUDA_VISIBLE_DEVICES when set, else every one torch sees."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return tuple(g.strip() for g in given.split(",") if g.strip())
    try:
        import torch

        return tuple(str(i) for i in range(torch.cuda.device_count()))
    except Exception:  # no usable CUDA: jobs share whatever device they pick
        return ()
