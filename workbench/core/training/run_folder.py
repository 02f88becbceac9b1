"""fit()'s run folder: its one owner (the lock) and every file a run writes there, from one process.

In a data-parallel run each rank has a RunFolder, but only rank 0's writes (`writes=True`);
on the others every write is skipped, so exactly one process writes each file. Reading a run to
resume it writes nothing, so a refused resume leaves every file as it was.

`record` is where every event the engine reports becomes a row of metrics.jsonl: events from
before the folder was taken (notices while the data loads) wait and are written, in order,
once it is; a row that names no step carries `at_step`, so a resume cuts it like the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.atomic import clean_temp_files, write_text_atomic
from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.events import CheckpointSaved, Event, EventSink, ImagesSaved, Notice, to_row
from workbench.core.inspection.epoch_images import save_epoch_images
from workbench.core.training.keeper import CheckpointKeeper
from workbench.core.training.state import Progress, ResumePoint, check_run_files, read_resume_point


class RunFolder:
    def __init__(self, writes: bool = True) -> None:
        self.writes = writes
        self.path: Path | None = None
        self.lock = runs.RunLock(Path("."))  # replaced by the run folder's own once there is one
        self.owned = False  # True once this process may write into the folder
        self.keeper: CheckpointKeeper | None = None
        self._waiting: list[dict] = []  # rows of events from before the folder was taken
        self._step = 0  # the last global step a row named

    def open(self, config: RunConfig, resume_dir: Path | None) -> ResumePoint | None:
        """The resume point of `resume_dir` (locked, then read and checked only), or, for a new run,
        a check that the runs folder can be written."""
        if resume_dir is None:
            runs.check_writable(Path(config.runs_dir).expanduser())
            return None
        self.path, self.lock = resume_dir, runs.RunLock(resume_dir)
        self.lock.acquire()  # before reading: a second trainer must not act on what the first replaces
        check_run_files(resume_dir)
        return read_resume_point(resume_dir, config.epochs)

    def take(self, config: RunConfig, point: ResumePoint | None, progress: Progress, info: dict[str, Any],
             emit: EventSink) -> Path:
        """Everything checked: take the folder (lock it, then write to it)."""
        if point is None:
            self.path = runs.create_run_dir(config)
            self.lock = runs.RunLock(self.path)
            self.lock.acquire()
        self.lock.record_owner()
        self.owned = True
        run_dir = self.path
        if point is not None:
            for leftover in clean_temp_files(run_dir / "checkpoints"):
                emit(Notice(f"removed an unfinished checkpoint write: {leftover.name}", "warning"))
            for problem in point.problems:
                emit(Notice(f"{problem}; using an earlier checkpoint", "warning"))
            for note in point.notes:  # the user's network file changed or is gone
                emit(Notice(note, "warning"))
            runs.repair_metrics(run_dir, keep_through_step=progress.global_step)
            write_text_atomic(run_dir / "config.toml", config.to_toml())  # the target may have grown
            emit(Notice(f"resuming from {point.path.name} (epoch {progress.epoch}, step {progress.global_step})"))
        self.keeper = CheckpointKeeper(run_dir / "checkpoints", config.keep_best, progress.history,
                                       best=(progress.best_val_acc, progress.best_epoch))
        runs.write_status(run_dir, "running")
        if point is not None:  # where the run once started from, and the search trial it was, stay on record
            info = {**_recorded(run_dir, [key for key in ("start", "trial") if key not in info]), **info}
        runs.write_run_info(run_dir, info)
        return run_dir

    def record(self, event: Event) -> None:
        """The event's row in metrics.jsonl (kept until the folder is taken)."""
        if not self.writes:
            return
        row = to_row(event)
        step = next((row[key] for key in ("global_step", "steps_done", "start_step") if isinstance(row.get(key), int)), None)
        if step is None:
            row["at_step"] = self._step
        else:
            self._step = step
        self._waiting.append(row)
        if self.owned:
            rows, self._waiting = self._waiting, []
            for waiting in rows:
                runs.append_metrics(self.path, waiting)

    def write_status(self, status: str, reason: str = "") -> None:
        if self.writes:
            runs.write_status(self.path, status, reason)

    def save_checkpoint(self, model, state: Callable[[], dict[str, Any]], epoch: int, score: float | None,
                        emit: EventSink, epoch_step: int = 0) -> None:
        """last.pt, and with a validation score, best.pt and the K best epochs (the keeper's rule)."""
        if not self.writes:
            return
        if not ckpt.all_finite(model):
            emit(Notice("weights are not finite: checkpoint not saved", "warning"))
            return
        for path, best in self.keeper.save(state(), epoch, score):
            emit(CheckpointSaved(path, epoch, best=best, epoch_step=epoch_step))

    def save_images(self, epoch: int, data, evaluation, first_batch, emit: EventSink) -> None:
        if self.writes:
            paths = save_epoch_images(self.path / "images", epoch, data, evaluation, first_batch)
            if paths:
                emit(ImagesSaved(tuple(paths)))

    def best_weights(self) -> dict[str, Any] | None:
        """The selected epoch's weights (on the CPU), when this process writes and best.pt exists."""
        path = self.path / "checkpoints" / ckpt.BEST if self.path is not None else None
        if not self.writes or path is None or not path.is_file():
            return None
        return ckpt.load_checkpoint(path, map_location="cpu")["model"]

    def record_failure(self, reason: str, details: str) -> None:
        """The run folder records a failure only when this process owned it."""
        if self.owned and self.path is not None and self.path.exists():
            try:
                runs.write_status(self.path, "failed", reason)
                if details:
                    write_text_atomic(self.path / "error.log", details)
            except (OSError, WorkbenchError):
                pass


def find_job_run(runs_dir: Path, job: str) -> Path | None:
    """The run folder a torchrun job (`job`: its run id) wrote before its workers were restarted,
    so the restarted ranks resume it; None when it wrote none yet (the job starts afresh)."""
    found = runs.folders_recording(runs_dir, "job", job)
    found = [path for path in found if (path / "checkpoints" / ckpt.LAST).is_file()]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


def _recorded(run_dir: Path, keys: list[str]) -> dict[str, Any]:
    """Those of `keys` the run's run.json records (each a table), for a resume to keep."""
    try:
        info = runs.read_run_info(run_dir)
    except (WorkbenchError, OSError, ValueError):
        return {}
    return {key: info[key] for key in keys if isinstance(info.get(key), dict)}
