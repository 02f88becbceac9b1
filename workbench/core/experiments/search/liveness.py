"""Who trains a trial, as the trial records it, and whether that process is gone.

A tag is host, boot, pid and the pid's start time: a pid reused after the worker died has
another start time, and a machine that shares the host name has another boot id, so only a
worker of this machine, this boot, is ever judged dead."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _boot() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def _started(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def worker_tag() -> str:
    return f"{socket.gethostname()}:{_boot()}:{os.getpid()}:{_started(os.getpid())}"


def tag_is_dead(tag: str) -> bool:
    """Whether the tagged worker is a process of this machine and boot that is gone (any other: False)."""
    parts = tag.split(":")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    host, boot, pid_text, started = parts
    if host != socket.gethostname() or not boot or boot != _boot():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return bool(started) and _started(pid) not in ("", started)


def tag_pid(tag: str) -> str:
    parts = tag.split(":")
    return parts[2] if len(parts) == 4 else "?"
