"""Read a file only when it is a regular file, never blocking on a pipe or device, up to a size.

Every reader of a run folder, an export bundle, the queue or a data folder opens through here
(and the few writers that append to a file in place: logs, a child's answer):
a FIFO or a device put where a file belongs would otherwise block `open()` or `read()` forever
(the app could not even exit), and a huge file would fill memory. The file is opened with
O_NONBLOCK and only then checked with fstat, so it is the file actually opened that is judged,
not one that was there when a separate stat looked.

`NotReadable` (a WorkbenchError) says what is wrong in one sentence; a missing file or another
OSError is raised as it is, for callers that treat "absent" differently from "wrong".
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

from workbench.core.errors import WorkbenchError

KB, MB, GB = 2**10, 2**20, 2**30
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class NotReadable(WorkbenchError):
    """A path that is not a regular file (a pipe, a device, a socket, a folder) or is larger than allowed."""


def kind_of(mode: int) -> str:
    """What a file of this st_mode is, in words."""
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return words
    return "a special file"


def _kind_of_path(path: str | os.PathLike) -> str:
    try:
        return kind_of(os.stat(path).st_mode)
    except OSError:
        return "a special file"


def _size_words(limit: int) -> str:
    return f"{limit // GB} GB" if limit >= GB else f"{limit // MB} MB" if limit >= MB else f"{limit // KB} KB"


def _open_regular_descriptor(path: str | os.PathLike, flags: int) -> tuple[int, os.stat_result]:
    """os.open with `flags` (O_NONBLOCK among them), kept only when what it opened is a regular file."""
    try:
        descriptor = os.open(path, flags, 0o666)
    except IsADirectoryError:
        raise NotReadable(f"{path} is a folder, not a file") from None
    except OSError as error:
        if error.errno != errno.ENXIO:  # ENXIO: a socket, a pipe nobody reads (to write), an absent device
            raise
        raise NotReadable(f"{path} is not a regular file ({_kind_of_path(path)}); it was put there by hand, "
                          "remove it") from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        raise NotReadable(f"{path} is not a regular file ({kind_of(status.st_mode)}); it was put there by hand, remove it")
    return descriptor, status


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, limit: int | None = None) -> Iterator[BinaryIO]:
    """The file opened for binary reading, once it is known to be a regular file of at most
    `limit` bytes. Raises NotReadable otherwise, OSError (FileNotFoundError...) as open does."""
    descriptor, status = _open_regular_descriptor(path, _FLAGS)
    try:
        if limit is not None and status.st_size > limit:
            raise NotReadable(f"{path} is larger than {_size_words(limit)} ({status.st_size:,} bytes); "
                              "it is not a file workbench wrote")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)  # a regular file: plain reads from here on
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        yield handle


def read_bytes(path: str | os.PathLike, limit: int) -> bytes:
    """The whole file (regular, at most `limit` bytes, even if it grows while read)."""
    chunks, total = [], 0
    with open_regular(path, limit) as handle:
        want = min(limit, os.fstat(handle.fileno()).st_size) + 1  # a read sized to the file, not the limit
        while chunk := handle.read(want):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise NotReadable(f"{path} is larger than {_size_words(limit)}; it is not a file workbench wrote")
            want = min(limit - total + 1, 16 * MB)
    return b"".join(chunks)


def read_text(path: str | os.PathLike, limit: int, errors: str = "strict") -> str:
    """The whole file as UTF-8 text (UnicodeDecodeError with errors="strict")."""
    return read_bytes(path, limit).decode("utf-8", errors)


def text_or_none(path: str | os.PathLike, limit: int, errors: str = "strict") -> str | None:
    """The file's text, or None when it is absent, unreadable, not a regular file, too large or
    (with errors="strict") not UTF-8: for listings, which skip what they cannot read."""
    try:
        return read_text(path, limit, errors)
    except (OSError, WorkbenchError, UnicodeDecodeError):
        return None


def read_from(path: str | os.PathLike, offset: int, most: int) -> tuple[bytes, int]:
    """(up to `most` bytes from `offset`, the file's size now): one step of a reader that tails a
    growing file. A size below the caller's offset means the file was replaced or cut short."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if offset >= size:
            return b"", size
        handle.seek(offset)
        return handle.read(most), size


def is_regular(path: str | os.PathLike) -> bool:
    """True for a regular file (through links), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def check_regular(path: Path | str, limit: int | None = None) -> None:
    """Raise NotReadable unless `path` is a regular file within `limit` (for loaders that must
    open the path themselves); a missing file passes, for the loader's own sentence."""
    try:
        with open_regular(path, limit):
            pass
    except FileNotFoundError:
        pass


def ensure_folder(path: str | os.PathLike) -> Path:
    """`path` made a folder (with its parents), or NotReadable naming what stands in the way."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            return path
    except (FileExistsError, NotADirectoryError):
        pass
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
    raise NotReadable(f"{blocker} should be a folder but is {_kind_of_path(blocker)}; it was put there by hand, "
                      "remove it")


def open_to_write(path: str | os.PathLike, append: bool = False):
    """A text file opened to write (emptied first) or append, once it is known to be a regular
    file: a pipe put where a log belongs would block the writer for ever."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor, _ = _open_regular_descriptor(path, flags | (os.O_APPEND if append else 0))
    try:
        if not append:
            os.ftruncate(descriptor, 0)  # only now: a device is never truncated
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "a" if append else "w", encoding="utf-8")
    except BaseException:
        os.close(descriptor)
        raise
