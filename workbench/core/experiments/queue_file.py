"""The queue's sqlite file, without a UI: every open goes through here, is judged before sqlite
sees the path, and every sqlite or OS error becomes one sentence chosen by its kind.

A pipe, device, socket, folder or dangling link where queue.sqlite (or the journal sqlite keeps
beside it) belongs is refused by the one regular-file guard (safe_read) before sqlite opens it.
What sqlite then reports is read by its result code (`sqlite_errorname`), never by its words:
busy (another process holds the write lock past the timeout), read-only (permissions, a
read-only disk), full, damaged (the only case where moving the file aside is the advice), an
I/O error. A kind not known here keeps its traceback: it is a bug, not something the user can fix.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from workbench.core.errors import WorkbenchError
from workbench.core.safe_read import NotReadable, check_regular, ensure_folder

BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another process's write lock

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
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
)""",
    # A listing reads the rows it shows, found through these, never the whole table.
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_sweep ON jobs (sweep)",
    "CREATE INDEX IF NOT EXISTS jobs_by_run_dir ON jobs (run_dir)",
    "CREATE INDEX IF NOT EXISTS jobs_by_ended ON jobs (ended)",
)

COMPANIONS = ("-journal", "-wal", "-shm")  # files sqlite opens beside the queue: a pipe there would hang it too
DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
READ_ONLY = ("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")


class QueueUnusable(WorkbenchError):
    """The queue file cannot be used now; `kind` says why: not-a-file, busy, read-only, full,
    damaged, foreign, io or cannot-open."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@contextmanager
def connect(path: Path, *, create: bool = False, timeout_s: float = BUSY_TIMEOUT_S) -> Iterator[sqlite3.Connection]:
    """A connection to the queue file at `path` (autocommit; rows by name); `create` makes its folder."""
    try:
        for file in (path, *(Path(f"{path}{suffix}") for suffix in COMPANIONS)):
            _judge(file)
        if create:
            ensure_folder(path.parent)
        db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    except NotReadable as error:
        raise QueueUnusable(f"cannot open the queue: {error}", "not-a-file") from None
    except (OSError, sqlite3.Error) as error:
        raise unusable(path, error, timeout_s) from None
    db.row_factory = sqlite3.Row
    try:
        yield db
    except sqlite3.Error as error:
        raise unusable(path, error, timeout_s) from None
    finally:
        db.close()


def _judge(file: Path) -> None:
    """NotReadable unless `file` is a regular file or is not there (sqlite makes it); opened
    without blocking, so a pipe put there never hangs the caller."""
    check_regular(file)
    if os.path.islink(file) and not os.path.exists(file):
        raise NotReadable(f"{file} is a link to {os.readlink(file)}, which is not there; restore it or remove the link")


@contextmanager
def transaction(db: sqlite3.Connection, create: bool = False) -> Iterator[sqlite3.Connection]:
    """One transaction holding sqlite's write lock from its first statement: no other process
    reads a row in between and acts on it too. `create` makes the table and its indexes in it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if create and not has_jobs_table(db):
            for statement in SCHEMA:
                db.execute(statement)
        yield db
    except BaseException:
        if db.in_transaction:  # sqlite rolls back by itself on some errors (a full disk)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def has_jobs_table(db: sqlite3.Connection) -> bool:
    """False for an empty file (sqlite's empty database) that no job was ever added to; an error
    for someone else's database (tables, none of them jobs): workbench never adds its table there."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone() is not None:
        return True
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%' ORDER BY name LIMIT 4")]
    if not tables:
        return False
    database = db.execute("PRAGMA database_list").fetchone()[2]
    raise QueueUnusable(f"{database} is not a workbench queue (it holds the tables {', '.join(map(repr, tables))}, "
                        "no jobs); move it aside or use another runs folder", "foreign")


def unusable(path: Path, error: OSError | sqlite3.Error, timeout_s: float = BUSY_TIMEOUT_S) -> WorkbenchError:
    """The sentence for an error on the queue at `path`, by the error's kind."""
    if isinstance(error, OSError):
        return _os_error(path, error)
    name = getattr(error, "sqlite_errorname", "") or ""
    kind = "_".join(name.split("_")[:2])  # its primary code: SQLITE_IOERR_WRITE -> SQLITE_IOERR
    if kind in BUSY:
        return QueueUnusable(f"the queue {path} is busy: another workbench process has held its write lock for over "
                             f"{timeout_s:g} s; try again when that process is done", "busy")
    if kind in READ_ONLY or (kind == "SQLITE_CANTOPEN" and not _writable(path)):
        return _denied(path)
    if kind == "SQLITE_FULL":
        return _full(path)
    if kind in DAMAGED:
        return QueueUnusable(f"the queue {path} is damaged ({error}); move it aside to start a new one "
                             "(its jobs stay in the moved file)", "damaged")
    if kind == "SQLITE_ERROR" and ("no such table" in str(error) or "no such column" in str(error)):
        return QueueUnusable(f"{path} is not a workbench queue ({error}); move it aside to start a new one", "foreign")
    if kind == "SQLITE_IOERR":
        return QueueUnusable(f"cannot read or write the queue {path}: disk I/O error ({name}); check the disk, "
                             "then try again (the queue is kept)", "io")
    if kind == "SQLITE_CANTOPEN":
        return QueueUnusable(f"cannot open the queue {path} ({error}); choose another --runs-dir", "cannot-open")
    raise error  # a kind the user cannot act on: a bug, with its traceback


def _os_error(path: Path, error: OSError) -> WorkbenchError:
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return _denied(path)
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return _full(path)
    return QueueUnusable(f"cannot open the queue {path} ({error.strerror or error}); choose another --runs-dir",
                         "cannot-open")


def _denied(path: Path) -> WorkbenchError:
    if path.exists() and not os.access(path, os.R_OK):
        return QueueUnusable(f"cannot read the queue {path}: permission denied (the file's permissions); give read "
                             "permission or choose another --runs-dir", "read-only")
    return QueueUnusable(f"cannot write the queue {path}: it is read-only (the permissions of the file or its "
                         "folder, or a read-only disk); give write permission or choose another --runs-dir", "read-only")


def _full(path: Path) -> WorkbenchError:
    return QueueUnusable(f"cannot write the queue {path}: the disk is full; free some space and try again "
                         "(the queue is kept as it was)", "full")


def _writable(path: Path) -> bool:
    """Whether this process may write the file and its folder (sqlite writes a journal beside it)."""
    folder_ok = os.access(path.parent, os.W_OK | os.X_OK)
    return folder_ok and (not path.exists() or os.access(path, os.R_OK | os.W_OK))
