"""The job queue: a sqlite file under the runs folder (standard library only), so jobs outlive any process.

A job is the train flags of one run. Its state moves pending -> running -> done | failed | stopped;
a running job whose runner died goes back to pending and, when its run folder holds a checkpoint,
is resumed from it instead of starting over. Claiming takes sqlite's write lock (BEGIN IMMEDIATE)
before it reads, so two runners on one queue never take the same job.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError

QUEUE_FILE = "queue.sqlite"
LOG_FOLDER = ".queue"  # one log per job: what its trainer printed
RUNNERS = "runners"  # in LOG_FOLDER: one lock file per live runner
STATES = ("pending", "running", "done", "failed", "stopped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    args TEXT NOT NULL,                  -- JSON list of `workbench train` flags (never --runs-dir)
    sweep TEXT NOT NULL DEFAULT '',      -- the sweep the job belongs to, if any
    state TEXT NOT NULL DEFAULT 'pending',
    run_dir TEXT NOT NULL DEFAULT '',    -- the run folder, once its trainer made one
    runner TEXT NOT NULL DEFAULT '',     -- host:pid of the runner that holds the job
    gpu TEXT NOT NULL DEFAULT '',        -- CUDA_VISIBLE_DEVICES it ran with
    attempts INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    added REAL NOT NULL,
    started REAL,
    ended REAL
)"""


@dataclass(frozen=True)
class Job:
    id: int
    args: tuple[str, ...]
    sweep: str
    state: str
    run_dir: str
    runner: str
    gpu: str
    attempts: int
    exit_code: int | None
    reason: str
    added: float
    started: float | None
    ended: float | None

    @property
    def resumable(self) -> bool:
        """The job's run folder holds a checkpoint to continue from."""
        return bool(self.run_dir) and any((Path(self.run_dir) / "checkpoints").glob("last*.pt"))

    def to_dict(self) -> dict:
        return {"id": self.id, "args": list(self.args), "sweep": self.sweep, "state": self.state,
                "run_dir": self.run_dir, "runner": self.runner, "gpu": self.gpu, "attempts": self.attempts,
                "exit_code": self.exit_code, "reason": self.reason, "added": self.added,
                "started": self.started, "ended": self.ended}


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._descriptor = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
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
            descriptor = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
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


class JobQueue:
    """The queue of one runs folder. Every method opens its own short transaction."""

    def __init__(self, runs_dir: Path | str) -> None:
        self.runs_dir = Path(runs_dir).expanduser()
        self.path = self.runs_dir / QUEUE_FILE
        self.log_dir = self.runs_dir / LOG_FOLDER

    # ---- the file ------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @contextmanager
    def _connect(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        if not create and not self.exists:
            raise FileNotFoundError(self.path)
        try:
            if create:
                self.runs_dir.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise WorkbenchError(f"cannot open the queue {self.path} ({error}); choose another --runs-dir") from None
        db.row_factory = sqlite3.Row
        try:
            if create:
                db.execute(_SCHEMA)
            yield db
        except sqlite3.DatabaseError as error:
            raise WorkbenchError(f"the queue {self.path} cannot be read ({error}); move it aside to start a new one") from None
        finally:
            db.close()

    @contextmanager
    def _write(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction holding sqlite's write lock from its first statement: no other
        process reads a row in between and acts on it too."""
        with self._connect(create) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ---- adding and reading ----------------------------------------------------------

    def add(self, jobs: list[list[str]], sweep: str = "") -> list[int]:
        """Queue every job in one transaction: all of them or none."""
        now = time.time()
        with self._write(create=True) as db:
            ids = [db.execute("INSERT INTO jobs (args, sweep, added) VALUES (?, ?, ?)",
                              (json.dumps(list(args)), sweep, now)).lastrowid for args in jobs]
        return [int(i) for i in ids]

    def jobs(self) -> list[Job]:
        if not self.exists:
            return []
        with self._connect() as db:
            return [_job(row) for row in db.execute("SELECT * FROM jobs ORDER BY id")]

    def get(self, job_id: int) -> Job | None:
        return next((job for job in self.jobs() if job.id == job_id), None)

    def sweep_of(self, run_dir: Path) -> str:
        """The sweep a run folder was trained for ('' when none)."""
        target = _same_path(run_dir)
        return next((job.sweep for job in self.jobs() if job.run_dir and _same_path(job.run_dir) == target), "")

    def remove(self, job_id: int) -> None:
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise WorkbenchError(f"there is no job {job_id} in {self.path}")
            if row["state"] == "running":
                raise WorkbenchError(f"job {job_id} is running; stop its queue runner first")
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    # ---- what runners do ---------------------------------------------------------------

    def claim(self, runner: str, gpu: str = "") -> Job | None:
        """Take the oldest pending job, atomically; None when there is none."""
        with self._write(create=True) as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'pending' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', runner = ?, gpu = ?, started = ?, ended = NULL, "
                       "attempts = attempts + 1, exit_code = NULL, reason = '' WHERE id = ?",
                       (runner, gpu, time.time(), row["id"]))
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def set_run_dir(self, job_id: int, run_dir: Path) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET run_dir = ? WHERE id = ?", (str(run_dir), job_id))

    def finish(self, job_id: int, state: str, exit_code: int | None, reason: str = "") -> None:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        with self._write() as db:
            ended = None if state == "pending" else time.time()
            db.execute("UPDATE jobs SET state = ?, exit_code = ?, reason = ?, ended = ?, "
                       "runner = CASE WHEN ? = 'pending' THEN '' ELSE runner END WHERE id = ?",
                       (state, exit_code, reason, ended, state, job_id))

    def recover(self) -> list[Job]:
        """Running jobs whose runner on this host is gone: back to pending (resumed when they
        have a checkpoint), or done when their trainer finished after its runner died.
        Returns the jobs it changed. Jobs of runners on other hosts are left alone."""
        from workbench.core import runs

        from workbench.core.training.run_folder import runs_recording

        host = socket.gethostname()
        changed = []
        with self._write(create=True) as db:
            for row in db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall():
                job = _job(row)
                runner_host, _, rest = job.runner.partition(":")
                if runner_host != host or self._runner_alive(job.runner, rest.partition(":")[0]):
                    continue
                if not job.run_dir:  # its runner died before it learnt the folder: find it by the job's run id
                    found = runs_recording(self.runs_dir, "run_id", job_run_id(job.id))
                    if found:
                        job = _job({**dict(row), "run_dir": str(found[0])})
                        db.execute("UPDATE jobs SET run_dir = ? WHERE id = ?", (job.run_dir, job.id))
                run_dir = Path(job.run_dir) if job.run_dir else None
                if run_dir is not None and runs.is_locked(run_dir):
                    continue  # its trainer outlived the runner and is still training
                status = runs.read_status(run_dir)[0] if run_dir is not None else ""
                if status == "finished":
                    state, reason = "done", "finished after its runner died"
                else:
                    state, reason = "pending", "its runner died; it resumes from its checkpoint"
                db.execute("UPDATE jobs SET state = ?, reason = ?, runner = '' WHERE id = ?", (state, reason, job.id))
                changed.append(job)
        return changed

    def log_path(self, job_id: int) -> Path:
        return self.log_dir / f"{job_run_id(job_id)}.log"

    def _runner_alive(self, runner: str, pid: str) -> bool:
        alive = RunnerLock(self.log_dir, runner).holder_alive()
        if alive is None:  # a runner of an older version: only its pid says
            return pid.isdigit() and _alive(int(pid))
        return alive


def job_run_id(job_id: int) -> str:
    """The id a job's trainer records in run.json (and its answer and log files are named by)."""
    return f"job-{job_id}"


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["args"] = tuple(json.loads(values["args"]))
    return Job(**values)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_path(path: Path | str) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


def args_for_config(config: RunConfig) -> list[str]:
    """The train flags that rebuild `config` (those that differ from the defaults, and the
    data set, architecture and epochs always); the runs folder is the queue's own."""
    from workbench.core.config import SETTINGS

    flags: list[str] = []
    for item in SETTINGS:
        value = getattr(config, item.name)
        if item.name == "runs_dir" or (
                value == item.default and item.name not in ("dataset", "arch", "epochs")):
            continue
        if item.kind == "bool":
            flags.append(item.option if value else "--no-" + item.option[2:])
        elif item.kind == "list":
            flags += [item.option, ",".join(value) or "none"]
        else:
            flags += [item.option, str(value)]
    return flags
