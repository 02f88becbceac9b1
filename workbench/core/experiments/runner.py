"""The queue runner: works through pending jobs, each a `python -m workbench train` subprocess.

Up to `parallel` jobs run at once; with more than one GPU each slot gets its own through
CUDA_VISIBLE_DEVICES. A job that was cut off (its runner killed, its trainer killed by a signal)
goes on from its run folder's checkpoint with `train --resume`. Stopping the runner (SIGINT or
SIGTERM, or `stop` from another thread) stops its trainers cleanly, each saving a checkpoint,
and puts their jobs back as pending, to be resumed by the next runner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workbench.core.experiments.queue import Job, JobQueue, runner_id
from workbench.core.runs import read_status

POLL_S = 0.3
MAX_ATTEMPTS = 3  # a job whose trainer keeps being killed is given up after this many starts
EXIT_OK, EXIT_BAD_INPUT, STOPPED_CODES = 0, 2, (130, 143)


@dataclass
class _Slot:
    index: int
    gpu: str
    job: Job | None = None
    process: subprocess.Popen | None = None
    started: float = 0.0
    stopping: bool = False


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
    parallel: int = 1
    gpus: tuple[str, ...] = ()
    on_event: Callable[[str], None] = lambda line: None  # a line for the terminal
    on_job_end: Callable[[JobEnded], None] = lambda ended: None
    python: str = sys.executable
    _stop: threading.Event = field(default_factory=threading.Event)

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
        while True:
            if not self._stop.is_set():
                for slot in slots:
                    if slot.process is None:
                        job = self.queue.claim(runner, slot.gpu)
                        if job is None:
                            break
                        self._start(slot, job)
            for slot in slots:
                if slot.process is not None:
                    if self._stop.is_set() and not slot.stopping:
                        slot.stopping = True
                        slot.process.send_signal(signal.SIGTERM)
                    self._find_run_dir(slot)
                    if slot.process.poll() is not None:
                        self._end(slot)
                        ended += 1
            if all(slot.process is None for slot in slots):
                if self._stop.is_set() or not self._has_pending():
                    return ended
                continue
            time.sleep(POLL_S) if self._stop.is_set() else self._stop.wait(POLL_S)

    def _has_pending(self) -> bool:
        return any(job.state == "pending" for job in self.queue.jobs())

    def _start(self, slot: _Slot, job: Job) -> None:
        runs_dir = str(self.queue.runs_dir)
        if job.resumable:
            command = [self.python, "-m", "workbench", "train", "--resume", job.run_dir, "--runs-dir", runs_dir]
            how = f"resuming {Path(job.run_dir).name}"
        else:
            command = [self.python, "-m", "workbench", "train", *job.args, "--runs-dir", runs_dir]
            how = " ".join(job.args)
        env = dict(os.environ)
        if slot.gpu:
            env["CUDA_VISIBLE_DEVICES"] = slot.gpu
        self.queue.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.queue.log_path(job.id), "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            slot.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL)
        slot.job, slot.started, slot.stopping = job, time.time(), False
        gpu = f" on GPU {slot.gpu}" if slot.gpu else ""
        self.on_event(f"job {job.id}{gpu}: {how}")

    def _find_run_dir(self, slot: _Slot) -> None:
        """The run folder whose .lock names this trainer's pid (the trainer writes it once it owns the folder)."""
        job = slot.job
        if job is None or job.run_dir or slot.process is None:
            return
        found = _run_dir_of(self.queue.runs_dir, slot.process.pid, slot.started)
        if found is not None:
            self.queue.set_run_dir(job.id, found)
            slot.job = job = self.queue.get(job.id) or job

    def _end(self, slot: _Slot) -> None:
        job, process = slot.job, slot.process
        assert job is not None and process is not None
        self._find_run_dir(slot)
        job = self.queue.get(job.id) or job
        code = process.returncode
        state, reason = self._outcome(job, code, slot.stopping)
        self.queue.finish(job.id, state, code, reason)
        slot.job, slot.process = None, None
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
        return "failed", _failure_reason(self.queue.log_path(job.id), job.run_dir)


def run_owned_by(runs_dir: Path, since: float, is_owner) -> Path | None:
    """The run folder in `runs_dir` whose lock was taken after `since` by a process for which
    `is_owner(pid)` holds (a queue job's trainer, a torchrun job's rank 0), or None."""
    for lock in Path(runs_dir).glob("*/.lock"):
        try:
            if lock.stat().st_mtime < since - 1:
                continue
            owner = json.loads(lock.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            continue
        if isinstance(owner, dict) and is_owner(owner.get("pid")):
            return lock.parent
    return None


def _run_dir_of(runs_dir: Path, pid: int, since: float) -> Path | None:
    return run_owned_by(runs_dir, since, lambda owner: owner == pid)


def _failure_reason(log: Path, run_dir: str) -> str:
    """The trainer's own sentence: its last error line, else the run's status reason."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith("workbench: error: "):
            return line.removeprefix("workbench: error: ")
    if run_dir:
        status, reason = read_status(Path(run_dir))
        if reason:
            return reason
    return lines[-1][:200] if lines else "the trainer failed without a message"


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
