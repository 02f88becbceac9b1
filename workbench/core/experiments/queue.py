"""The job queue: a sqlite file under the runs folder (standard library only), so jobs outlive any process.

A job is the train flags of one run. Its state moves pending -> running -> done | failed | stopped;
a running job whose runner died goes back to pending and, when its run folder holds a checkpoint,
is resumed from it instead of starting over. Claiming takes sqlite's write lock (BEGIN IMMEDIATE)
before it reads, so two runners on one queue never take the same job.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator

from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.experiments import queue_file
from workbench.core.experiments.runner_lock import RunnerLock, runner_id

__all__ = ["Job", "JobQueue", "RunnerLock", "args_for_config", "job_run_id", "runner_id"]

QUEUE_FILE = "queue.sqlite"
LOG_FOLDER = ".queue"  # one log per job: what its trainer printed
STATES = ("pending", "running", "done", "failed", "stopped")
ENDED = ("done", "failed", "stopped")
SHOWN = 20  # a listing shows the running jobs, this many next pending and this many last ended


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
    damaged: str = ""  # why its row cannot be run as it is (edited by hand, a newer workbench): "" when sound

    @property
    def resumable(self) -> bool:
        """The job's run folder holds a checkpoint to continue from."""
        return bool(self.run_dir) and any((Path(self.run_dir) / "checkpoints").glob("last*.pt"))

    def to_dict(self) -> dict:
        return {"id": self.id, "args": list(self.args), "sweep": self.sweep, "state": self.state,
                "run_dir": self.run_dir, "runner": self.runner, "gpu": self.gpu, "attempts": self.attempts,
                "exit_code": self.exit_code, "reason": self.reason, "added": self.added,
                "started": self.started, "ended": self.ended, **({"damaged": self.damaged} if self.damaged else {})}


class JobQueue:
    """The queue of one runs folder. Every method opens its own short transaction; every open
    goes through queue_file, which refuses what is not a regular file and names each error's kind."""

    def __init__(self, runs_dir: Path | str, timeout_s: float | None = None) -> None:
        self.runs_dir = Path(runs_dir).expanduser()
        self.path = self.runs_dir / QUEUE_FILE
        self.log_dir = self.runs_dir / LOG_FOLDER
        self.timeout_s = queue_file.BUSY_TIMEOUT_S if timeout_s is None else timeout_s

    # ---- the file ------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """Something is where the queue belongs (whether it is a queue, opening it says)."""
        return os.path.lexists(self.path)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        """A connection for reading; None when there is no queue yet (no file, or an empty one)."""
        if not self.exists:
            yield None
            return
        with queue_file.connect(self.path, timeout_s=self.timeout_s) as db:
            yield db if queue_file.has_jobs_table(db) else None

    @contextmanager
    def _write(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction holding sqlite's write lock from its first statement."""
        if not create and not self.exists:
            raise WorkbenchError(f"there is no queue in {self.runs_dir} ({QUEUE_FILE} is not there); "
                                 "add jobs with `workbench sweep` or `workbench queue add`")
        with queue_file.connect(self.path, create=create, timeout_s=self.timeout_s) as db:
            with queue_file.transaction(db, create=create) as held:
                yield held

    # ---- adding and reading ----------------------------------------------------------

    def add(self, jobs: list[list[str]], sweep: str = "") -> list[int]:
        """Queue every job in one transaction: all of them or none."""
        with self._write(create=True) as db:
            return self._insert(db, jobs, sweep)

    def add_sweep(self, jobs: list[list[str]]) -> tuple[str, list[int]]:
        """Queue a sweep's jobs under a new sweep id, (the id, the job ids). The id is the time and
        a random suffix, checked unused inside the transaction that inserts, so two sweeps queued
        in the same second (from two processes, too) never share one."""
        with self._write(create=True) as db:
            stamp = time.strftime("sweep-%Y%m%d-%H%M%S")
            while True:
                sweep = f"{stamp}-{_suffix()}"
                if db.execute("SELECT 1 FROM jobs WHERE sweep = ? LIMIT 1", (sweep,)).fetchone() is None:
                    break
            return sweep, self._insert(db, jobs, sweep)

    @staticmethod
    def _insert(db: sqlite3.Connection, jobs: list[list[str]], sweep: str) -> list[int]:
        now = time.time()
        return [int(db.execute("INSERT INTO jobs (args, sweep, added) VALUES (?, ?, ?)",
                               (json.dumps(list(args)), sweep, now)).lastrowid) for args in jobs]

    def jobs(self, sweep: str | None = None) -> list[Job]:
        """Every job (of one sweep), oldest first: for scripts and `--all`; listings use `window`."""
        with self._read() as db:
            if db is None:
                return []
            if sweep is None:
                return [_job(row) for row in db.execute("SELECT * FROM jobs ORDER BY id")]
            return [_job(row) for row in db.execute("SELECT * FROM jobs WHERE sweep = ? ORDER BY id", (sweep,))]

    def listing(self, most: int | None = SHOWN) -> tuple[list[Job], dict[str, int]]:
        """(what a listing shows, how many jobs are in each state), read in one transaction.
        The jobs shown, oldest first, are the running ones, the next `most` pending (those that run
        next) and the last `most` ended: only these rows are read, each group found by an index
        and cut by LIMIT. `most=None` shows every job."""
        with self._read() as db:
            if db is None:
                return [], {}
            db.execute("BEGIN")  # one snapshot: the counts agree with the rows
            try:
                if most is None:
                    rows = list(db.execute("SELECT * FROM jobs ORDER BY id"))
                else:
                    marks = ", ".join("?" for _ in ENDED)
                    rows = [*db.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY id LIMIT ?", (most,)),
                            *db.execute("SELECT * FROM jobs WHERE state = 'pending' ORDER BY id LIMIT ?", (most,)),
                            # +state: walk the `ended` index newest first and stop at `most`, rather than
                            # gather every ended job through the state index and sort them all
                            *db.execute(f"SELECT * FROM jobs WHERE ended IS NOT NULL AND +state IN ({marks}) "
                                        "ORDER BY ended DESC LIMIT ?", (*ENDED, most))]
                found = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        jobs = sorted({row["id"]: _job(row) for row in rows}.values(), key=lambda job: job.id)
        return jobs, {state: found[state] for state in STATES if found.get(state)}

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state (counted in the state index, no row decoded)."""
        with self._read() as db:
            if db is None:
                return {}
            found = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        return {state: found[state] for state in STATES if found.get(state)}

    def has_pending(self) -> bool:
        with self._read() as db:
            return db is not None and db.execute("SELECT 1 FROM jobs WHERE state = 'pending' LIMIT 1").fetchone() is not None

    def get(self, job_id: int) -> Job | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone() if db is not None else None
        return _job(row) if row is not None else None

    def sweep_of(self, run_dir: Path) -> str:
        """The sweep a run folder was trained for ('' when none)."""
        return self.sweeps_of([run_dir]).get(same_path(run_dir), "")

    def sweeps_of(self, run_dirs: Iterable[Path | str]) -> dict[str, str]:
        """{real path: sweep} of the given run folders that a job of a sweep trained, found
        through the run_dir index: the work grows with the folders asked about, not the queue."""
        spellings: dict[str, str] = {}  # how a job may have recorded the folder -> its real path
        for run_dir in run_dirs:
            real = same_path(run_dir)
            for spelling in (real, os.path.abspath(os.path.expanduser(str(run_dir))), str(run_dir)):
                spellings[spelling] = real
        found: dict[str, str] = {}
        with self._read() as db:
            if db is None:
                return found
            names = list(spellings)
            for start in range(0, len(names), 500):  # within sqlite's limit of bound values
                chunk = names[start:start + 500]
                marks = ", ".join("?" for _ in chunk)
                for row in db.execute(f"SELECT run_dir, sweep FROM jobs WHERE run_dir IN ({marks}) AND sweep != ''",
                                      chunk):
                    found[spellings[row["run_dir"]]] = row["sweep"]
        return found

    def remove(self, job_id: int) -> None:
        if not self.exists:
            raise WorkbenchError(f"there is no job {job_id} in {self.path} (there is no queue)")
        with self._write(create=True) as db:  # an empty file has no table yet; refused, the transaction writes nothing
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

        host = socket.gethostname()
        changed = []
        with self._write(create=True) as db:
            for row in db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall():
                job = _job(row)
                runner_host, _, rest = job.runner.partition(":")
                if runner_host != host or self._runner_alive(job.runner, rest.partition(":")[0]):
                    continue
                if not job.run_dir:  # its runner died before it learnt the folder: find it by the job's run id
                    found = runs.folders_recording(self.runs_dir, "run_id", job_run_id(job.id))
                    if found:
                        job = _job({**dict(row), "run_dir": same_path(found[0])})
                        db.execute("UPDATE jobs SET run_dir = ? WHERE id = ?", (job.run_dir, job.id))
                run_dir = Path(job.run_dir) if job.run_dir else None
                if run_dir is not None and runs.is_locked(run_dir):
                    continue  # its trainer outlived the runner and is still training
                status = runs.read_status(run_dir)[0] if run_dir is not None else ""
                if status == "finished":
                    state, reason = "done", "finished after its runner died"
                else:
                    state, reason = "pending", "its runner died; it resumes from its checkpoint"
                ended = time.time() if state == "done" else None  # an ended job lists among the last ended
                db.execute("UPDATE jobs SET state = ?, reason = ?, runner = '', ended = ? WHERE id = ?",
                           (state, reason, ended, job.id))
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


def _suffix() -> str:
    """The random part of a sweep id."""
    return secrets.token_hex(3)


_COLUMNS = {f.name: f for f in fields(Job) if f.name != "damaged"}
_NUMBERS = {"id": int, "attempts": int, "exit_code": int, "added": float, "started": float, "ended": float}


def _job(row: sqlite3.Row) -> Job:
    """A row as a Job. A row no workbench wrote (args that are not a list of flags, a state or a
    number of another kind, a column it does not know) becomes a job marked damaged, never an error:
    the listing shows it, a runner fails it with the reason, `queue remove` takes it out."""
    values = dict(row)
    problems = []
    try:
        args = json.loads(values.get("args") or "null")
    except (TypeError, ValueError):
        args = None
    if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        problems.append("its args are not a list of train flags")
        args = []
    job = {name: values.get(name) for name in _COLUMNS}
    job["args"] = tuple(args)
    for name in ("sweep", "run_dir", "runner", "gpu", "reason"):
        job[name] = job[name] if isinstance(job[name], str) else ""
    for name, kind in _NUMBERS.items():
        value = job[name]
        if value is None and name in ("exit_code", "started", "ended"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            problems.append(f"its {name} is {value!r}, not a number")
            value = 0 if name not in ("exit_code", "started", "ended") else None
        job[name] = kind(value) if value is not None else None
    if job["state"] not in STATES:
        problems.append(f"its state {job['state']!r} is not one of {', '.join(STATES)}")
        job["state"] = "failed"
    return Job(**job, damaged="; ".join(problems))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def same_path(path: Path | str) -> str:
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
