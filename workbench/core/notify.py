"""Tell the user a run ended: the terminal bell, a desktop notification, or the terminal's own.

`bell` writes BEL. `desktop` calls notify-send when it is on PATH and the session is not over
SSH (where it would notify the remote machine's desktop); otherwise, and over SSH, it writes
the OSC 9 and OSC 777 escape sequences, which terminals such as iTerm2, WezTerm, kitty,
foot and Windows Terminal turn into a notification on the machine the user sits at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Mapping, TextIO

from workbench.core.errors import WorkbenchError

CHANNELS = ("bell", "desktop")
BELL = "\a"


def parse_channels(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    for name in names:
        if name not in CHANNELS:
            raise WorkbenchError(f"--notify: {name!r} is not one of {', '.join(CHANNELS)}")
    if not names:
        raise WorkbenchError(f"--notify: give one or more of {', '.join(CHANNELS)}")
    return names


def osc_sequences(title: str, message: str) -> str:
    """OSC 9 (message only) and OSC 777 (title and message), with control characters removed."""
    title, message = _clean(title), _clean(message)
    return f"\x1b]9;{title}: {message}\x07\x1b]777;notify;{title};{message}\x07"


class Notifier:
    """Sends one notification over each chosen channel; a channel that fails never stops the caller."""

    def __init__(self, channels: tuple[str, ...], stream: TextIO | None, env: Mapping[str, str] | None = None) -> None:
        self.channels = channels
        self.stream = stream  # the terminal; None when there is none (output to a file)
        self.env = dict(os.environ if env is None else env)

    def __call__(self, title: str, message: str) -> list[str]:
        """Returns how it was delivered, e.g. ["bell", "notify-send"]."""
        done: list[str] = []
        if "bell" in self.channels and self._write(BELL):
            done.append("bell")
        if "desktop" in self.channels:
            sender = shutil.which("notify-send", path=self.env.get("PATH"))
            over_ssh = bool(self.env.get("SSH_CONNECTION") or self.env.get("SSH_TTY"))
            if sender and not over_ssh and self._send(sender, title, message):
                done.append("notify-send")
            elif self._write(osc_sequences(title, message)):
                done.append("osc")
        return done

    def _write(self, text: str) -> bool:
        if self.stream is None:
            return False
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            return False
        return True

    def _send(self, sender: str, title: str, message: str) -> bool:
        try:
            result = subprocess.run([sender, "--app-name=workbench", title, message], env=self.env,
                                    stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0


def _clean(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable() and ch != ";")[:300]


def run_ended_message(status: str, reason: str, run_name: str) -> tuple[str, str]:
    """(title, message) for a run that ended: finished, stopped, failed (NaN, a crash), with why."""
    if status == "finished":
        title = f"workbench: {run_name} finished"
    elif status in ("stopped", "pruned"):
        title = f"workbench: {run_name} {status}"
    else:
        title = f"workbench: {run_name} failed"
    return title, reason or status


class NotifyOnEnd:
    """An event sink that notifies once, when the run finishes, stops or fails (NaN loss, a crash)."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def __call__(self, event) -> None:
        from workbench.core.events import Failed, Finished

        if isinstance(event, Finished):
            name = event.run_dir.name if event.run_dir is not None else "the run"
            self.notifier(*run_ended_message(event.status, event.summary(), name))
        elif isinstance(event, Failed):
            name = event.run_dir.name if event.run_dir is not None else "the run"
            self.notifier(*run_ended_message("failed", event.reason, name))
