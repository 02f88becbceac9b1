"""The one way files are written: a temp file in the same folder, flushed, fsynced, renamed.

Readers (and a crash at any instant) see the old file or the whole new one, never half of it.
Files get the permissions the user's umask gives a new file (mkstemp alone would make them 0600).
A full disk becomes one sentence that names the folder; the old file stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from workbench.core.errors import WorkbenchError

TEMP_SUFFIX = ".tmp"
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask. Linux reports it in /proc; elsewhere os.umask must set it to read it,
    which another thread could observe for an instant."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path, before_replace: Callable[[], object] | None = None) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends.

    For libraries that want a file name (safetensors, ONNX). On an error the temporary
    file is removed and `path` is untouched. `before_replace` runs once the new file is
    complete and synced, just before it takes `path`'s place (to keep the old one aside).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~current_umask())
        _fsync_file(temporary)
        if before_replace is not None:
            before_replace()
        os.replace(temporary, path)
        fsync_dir(path.parent)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise disk_error(error, path) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, write: Callable[[IO[bytes]], object], before_replace=None) -> None:
    """Call `write(file)` on a temporary file, then put it in place of `path`."""
    with atomic_path(path, before_replace) as temporary:
        with open(temporary, "wb") as handle:
            write(handle)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(path: Path, value: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")


def disk_error(error: OSError, path: Path) -> Exception:
    """A full disk or quota as one sentence naming where; other OSErrors as they are."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return WorkbenchError(
            f"the disk holding {Path(path).parent} is full: {Path(path).name} was not written "
            "(the previous copy, if any, is kept); free some space and try again"
        )
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WorkbenchError(
            f"cannot write {Path(path).name} in {Path(path).parent} ({error.strerror}); "
            "it is read-only or not yours: fix its permissions or work elsewhere"
        )
    return error


# What atomic_path names a temporary file (mkstemp's 8 random characters), and keeper's link:
# only those are removed, never a user's own ".notes.tmp".
_OWN_TEMP = re.compile(r"^\..+\.([a-z0-9_]{8}|link)" + re.escape(TEMP_SUFFIX) + "$")


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove temp files a killed write left behind; they are never read."""
    removed = []
    for leftover in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if _OWN_TEMP.match(leftover.name) and leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` survive a power cut (best effort: not every system allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as handle:
        handle.flush()
        os.fsync(handle.fileno())


def check_folder_writable(folder: Path, flag: str = "") -> None:
    """Refuse, before any work, an output folder that cannot be made or written: a file in its
    place, a parent that is a file, a read-only parent. Creates nothing."""
    folder = Path(folder)
    named = f"{flag} {folder}" if flag else str(folder)
    nearest = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if nearest is None:
        return
    if not nearest.is_dir():
        what = "is" if nearest == folder else f"is inside {nearest}, which is"
        raise WorkbenchError(f"{named} {what} a file, not a folder; give a folder for the output")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise WorkbenchError(f"{named}: cannot write in {nearest} (read-only or not yours); give another folder")
