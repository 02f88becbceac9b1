"""Follow a run folder that another process writes: its metrics.jsonl rows back as engine events.

The dashboard shows these exactly as it shows a run it trains itself. Reads only what was
appended since the last poll and keeps a line that is still being written for the next one.
Pause and stop go the other way, through the run's control file, which the engine reads
between steps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from workbench.core import runs
from workbench.core.atomic import write_text_atomic
from workbench.core.events import Event, Failed, Finished, RunStarted, StepMetrics, epoch_from_row
from workbench.core.training.control import COMMANDS, CONTROL_FILE

_STEP_FIELDS = {f.name for f in dataclasses.fields(StepMetrics)}
_END_FIELDS = {f.name for f in dataclasses.fields(Finished)}


class RunFollower:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._offset = 0
        self._partial = b""
        self._started = False
        self._ended = False
        self.restarted = False  # the file was rewritten (a resume repaired it): read again from the top

    def poll(self) -> list[Event]:
        """The events that arrived since the last call (the first call replays the run so far)."""
        events: list[Event] = []
        if not self._started:
            started = self._run_started()
            if started is None:
                return events
            events.append(started)
            self._started = True
        for row in self._new_rows():
            kind = row.get("type")
            try:
                if kind == "step":
                    events.append(StepMetrics(**{k: row.get(k) for k in _STEP_FIELDS}))
                elif kind == "epoch":
                    events.append(epoch_from_row(row))
                elif kind == "end":
                    values = {k: row[k] for k in _END_FIELDS if k in row}
                    values["run_dir"] = self.run_dir
                    events.append(Finished(**values))
                    self._ended = True
            except TypeError:  # a row of another version: skip it rather than stop following
                continue
        status, reason = runs.read_status(self.run_dir)
        if status == "failed" and not self._ended:
            events.append(Failed(self.run_dir, reason or "the run failed"))
            self._ended = True
        return events

    @property
    def live(self) -> bool:
        """Some process still trains the run."""
        return runs.is_locked(self.run_dir)

    def send(self, word: str) -> None:
        """Ask the trainer to pause, run on, or stop (it reads the word within a step or so)."""
        if word not in COMMANDS:
            raise ValueError(f"unknown control word {word!r}")
        write_text_atomic(self.run_dir / CONTROL_FILE, word + "\n")

    def _run_started(self) -> RunStarted | None:
        info = runs.read_run_info(self.run_dir)
        if not info:
            return None
        try:
            config = runs.read_config(self.run_dir)
            epochs = config.epochs
        except Exception:  # a config being replaced this instant: the next poll reads it
            return None
        batch = int(info.get("batch_size") or config.batch_size)
        steps = max(1, -(-int(info.get("train_size") or 0) // max(batch, 1)))
        return RunStarted(
            run_dir=self.run_dir, arch=str(info.get("arch", config.arch)), params=int(info.get("params") or 0),
            device=str(info.get("device", "")), device_name=f"{info.get('device', '?')} (watched)",
            dataset=str(info.get("dataset", config.dataset)), classes=tuple(info.get("classes") or ()),
            train_size=int(info.get("train_size") or 0), test_size=int(info.get("test_size") or 0),
            epochs=epochs, steps_per_epoch=steps, val_size=int(info.get("val_size") or 0),
            recipe=str((info.get("recipe") or {}).get("name", config.recipe)), batch_size=batch,
        )

    def _new_rows(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        try:
            size = path.stat().st_size
            if size < self._offset:  # rewritten shorter: start over
                self._offset, self._partial, self.restarted = 0, b"", True
            with open(path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except OSError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # "" after a complete line, else the part still being written
        return runs.metrics_rows(lines)
