"""RunFollower: a run folder that another process writes, read back as the run's events.

The rows of metrics.jsonl are the run's whole story (start, steps, epochs, notices, pauses, the
end or the failure), so following a run is reading them as they are appended. One thing the
rows cannot say is that the trainer died without a word (killed, power cut): when the rows say
someone trains the run but nobody holds its lock, the follower adds an "interrupted" status.
Pause and stop go the other way, through the run's control file, which the engine reads
between steps and answers with a row.
"""

from __future__ import annotations

from pathlib import Path

from workbench.core import runs
from workbench.core.atomic import write_text_atomic
from workbench.core.events import Event, Failed, Finished, RunStarted, StatusChanged, from_row
from workbench.core.lifecycle.tail import JsonLinesTail
from workbench.core.training.control import COMMANDS, CONTROL_FILE

INTERRUPTED = "nobody trains this run now: its trainer ended without a word (killed?); resume it to go on"


class RunFollower:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._tail = JsonLinesTail(self.run_dir / "metrics.jsonl")
        self._training = False  # the last row says a trainer is at work

    def poll(self) -> tuple[list[Event], bool]:
        """(events since the last call, whether they start over from the run's first row).

        The first call replays the run so far; a run whose file was rewritten (a resume repairs
        it) is replayed whole again, with True."""
        held = runs.is_locked(self.run_dir) if self._training else True  # before reading: see below
        rows, restarted = self._tail.read()
        events = [event for row in rows if (event := from_row(row, self.run_dir)) is not None]
        for event in events:
            if isinstance(event, RunStarted) or (isinstance(event, StatusChanged) and event.status != "interrupted"):
                self._training = True
            elif isinstance(event, (Finished, Failed)):
                self._training = False
        # The lock was looked at before the rows were read: a trainer that wrote its end and
        # then let go is read as ended, never as interrupted.
        if self._training and not held and not rows:
            events.append(StatusChanged("interrupted", INTERRUPTED))
            self._training = False
        return events, restarted

    @property
    def live(self) -> bool:
        """Some process trains the run now."""
        return runs.is_locked(self.run_dir)

    def send(self, word: str) -> None:
        """Ask the trainer to pause, run on, or stop (it reads the word within a step or so)."""
        if word not in COMMANDS:
            raise ValueError(f"unknown control word {word!r}")
        write_text_atomic(self.run_dir / CONTROL_FILE, word + "\n")
