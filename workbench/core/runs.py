"""Run folders: create one per training run, own it while training, record status and metrics, list runs.

A run folder is readable without the app:
    config.toml      the RunConfig it trains with (a resume with more epochs updates it)
    status           running | finished | stopped | failed (one word, then an optional reason line)
    metrics.jsonl    one JSON row per event: {"type": "start" | "step" | "epoch" | "notice" | "status" | "end" ...}
                     (see core/events.py); the rows are the run's whole story, what every dashboard shows
    run.json         facts learned at start: classes, mean/std, params, device, recipe
    .lock            held (flock) by the process training the run; the OS releases it when that process dies
    checkpoints/     last.pt, last.prev.pt and best.pt
    images/          inspection PNGs with JSON sidecars
    export/          the exported model
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from workbench.core.atomic import write_json_atomic, write_text_atomic
from workbench.core.catalog import arch_label
from workbench.core.config import SETTING_BY_NAME, RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.lifecycle.tail import rows_of
from workbench.core.network_copy import keep_copy
from workbench.core.run_lock import LOCK_FILE, RunLock, is_locked
from workbench.core.safe_read import KB, MB, read_text, text_or_none

STATUSES = ("running", "finished", "stopped", "pruned", "failed")  # pruned: a search stopped it early
# The most each run file may hold: anything larger was not written by a run.
STATUS_LIMIT, INFO_LIMIT, METRICS_LIMIT, CONFIG_LIMIT = 64 * KB, 64 * MB, 1024 * MB, 4 * MB

__all__ = ["LOCK_FILE", "RunLock", "RunSummary", "append_metrics", "check_writable", "create_run_dir", "epoch_records",
           "folders_recording", "is_locked",
           "is_interrupted", "list_runs", "read_config", "read_metrics", "read_run_info", "read_status",
           "repair_metrics", "resolve_run", "summarize_run", "write_run_info", "write_status", "write_text_atomic"]


def create_run_dir(config: RunConfig, now: datetime | None = None) -> Path:
    """Make a fresh, uniquely named run folder, checking first that it can be written."""
    runs_dir = Path(config.runs_dir).expanduser()
    check_writable(runs_dir)
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{arch_label(config.arch).replace(':', '-')}"  # tv:resnet18 -> tv-resnet18: no colon
    for attempt in range(1000):
        run_dir = runs_dir / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            run_dir.mkdir(parents=True)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - a thousand runs in one second
        raise WorkbenchError(f"could not create a run folder in {runs_dir}")
    for sub in ("checkpoints", "images", "export"):
        (run_dir / sub).mkdir()
    write_text_atomic(run_dir / "config.toml", config.to_toml())
    keep_copy(run_dir, config.arch)  # the user's network file as this run trains it
    write_status(run_dir, "running")
    return run_dir


def check_writable(runs_dir: Path, need_mb: int = 50) -> None:
    """Fail before training, not after an epoch, when runs cannot be saved."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs_dir):
            pass
    except OSError as error:
        raise WorkbenchError(
            f"cannot write to runs folder {runs_dir} ({error.strerror or error}); "
            "choose another with --runs-dir",
            field="runs_dir",
        ) from None
    free_mb = _free_mb(runs_dir)
    if free_mb is not None and free_mb < need_mb:
        raise WorkbenchError(
            f"runs folder {runs_dir} has only {free_mb:.0f} MB free; free some space or "
            "choose another with --runs-dir",
            field="runs_dir",
        )


def _free_mb(path: Path) -> float | None:
    try:
        stats = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize / 1e6


# ---- status, facts and metrics ---------------------------------------------------------------


def write_status(run_dir: Path, status: str, reason: str = "") -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    write_text_atomic(run_dir / "status", status + ("\n" + reason if reason else "") + "\n")


def read_status(run_dir: Path) -> tuple[str, str]:
    """(status, reason); a missing or unreadable file reads as ("unknown", "")."""
    text = text_or_none(run_dir / "status", STATUS_LIMIT)
    if text is None:
        return "unknown", ""
    lines = text.splitlines()
    status = lines[0].strip() if lines else "unknown"
    return status, "\n".join(lines[1:]).strip()


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    write_json_atomic(run_dir / "run.json", info)


def read_run_info(run_dir: Path) -> dict[str, Any]:
    try:
        info = json.loads(text_or_none(run_dir / "run.json", INFO_LIMIT) or "{}")
    except (ValueError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WorkbenchError(f"the disk holding {run_dir} is full: a row of {path} was not written; "
                                 "free some space, then resume the run") from None
        raise WorkbenchError(f"cannot append to {path} ({error.strerror or error})") from None


def repair_metrics(run_dir: Path, keep_through_step: int | None = None) -> int:
    """Before a resume appends: drop a torn last line (a crash mid-write) and, with
    `keep_through_step`, the rows of steps the checkpoint being resumed never reached.
    Returns how many lines were dropped; the file is rewritten atomically, only if needed."""
    path = run_dir / "metrics.jsonl"
    text = text_or_none(path, METRICS_LIMIT, errors="replace")
    if text is None:
        return 0
    lines = text.splitlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        step = row.get("global_step", row.get("steps_done", row.get("at_step", 0))) if isinstance(row, dict) else 0
        if keep_through_step is None or not isinstance(step, int) or step <= keep_through_step:
            kept.append(line)
    if len(kept) == len(lines) and (not text or text.endswith("\n")):
        return 0
    write_text_atomic(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All rows in order; a torn or damaged line (crash mid-write) is skipped."""
    text = text_or_none(run_dir / "metrics.jsonl", METRICS_LIMIT, errors="replace")
    return rows_of(text.splitlines()) if text else []  # the one reader of metrics lines, shared with the follower


def epoch_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Epoch rows, one per epoch (the latest, if a resume repeated one), in epoch order."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in records:
        if row.get("type") == "epoch" and isinstance(row.get("epoch"), int):
            by_epoch[row["epoch"]] = row
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


RESUME_NEEDS = ("dataset", "arch", "epochs", "batch_size", "optimizer", "lr")


def read_config(run_dir: Path, *, for_resume: bool = False) -> RunConfig:
    """The config a run trains with; its data folder may since have moved or gone.

    `for_resume` refuses a config.toml that lost its settings (emptied, cut short): filling
    them with defaults would continue the run with settings it never had.
    """
    path = run_dir / "config.toml"
    config = RunConfig.from_toml(path, check_paths=False)
    if for_resume:
        import tomllib

        keys = {key.replace("-", "_") for key in tomllib.loads(read_text(path, CONFIG_LIMIT))}
        missing = [key for key in RESUME_NEEDS if key not in keys]
        if missing:
            raise WorkbenchError(
                f"{path} lacks {', '.join(missing)} (emptied or cut short?); restore it before resuming: "
                "the run's checkpoint was trained with other settings than defaults would give"
            )
    return config


# ---- listing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    path: Path
    name: str
    arch: str
    dataset: str
    epochs: int  # the target
    epochs_done: int
    best_acc: float | None  # on best_split
    best_split: str | None  # "val" (the selection split) or "test" (runs without validation)
    best_epoch: int | None
    status: str
    started: datetime | None
    lr: float | None = None  # the peak learning rate set; None when its recipe sets its own (the speedrun)


_STAMP = re.compile(r"^(\d{8}-\d{6})")


def best_of(rows: list[dict[str, Any]]) -> tuple[float | None, str | None, int | None]:
    """(accuracy, split, epoch) of the best epoch row: by validation accuracy, else test."""
    for split in ("val", "test"):
        scored = [row for row in rows if isinstance(row.get(f"{split}_acc"), (int, float))]
        if scored:
            best = max(scored, key=lambda row: row[f"{split}_acc"])
            return float(best[f"{split}_acc"]), split, best.get("epoch")
    return None, None, None


def summarize_run(run_dir: Path) -> RunSummary | None:
    """A one-line view of a run folder, or None when the folder is not a run."""
    if not (run_dir / "config.toml").is_file():
        return None
    try:
        config = read_config(run_dir)
        arch, dataset, epochs = config.arch, config.dataset, config.epochs
        lr = config.lr if SETTING_BY_NAME["lr"].reads(config.recipe) else None
    except WorkbenchError:
        arch, dataset, epochs, lr = "?", "?", 0, None
    rows = epoch_records(read_metrics(run_dir))
    best, split, best_epoch = best_of(rows)
    match = _STAMP.match(run_dir.name)
    started = datetime.strptime(match.group(1), "%Y%m%d-%H%M%S") if match else None
    status, _ = read_status(run_dir)
    if status == "running" and is_interrupted(run_dir):
        status = "interrupted"
    done = max((row["epoch"] for row in rows), default=0)
    return RunSummary(
        path=run_dir, name=run_dir.name, arch=arch, dataset=dataset, epochs=max(epochs, done),
        epochs_done=done, best_acc=best, best_split=split, best_epoch=best_epoch,
        status=status, started=started, lr=lr,
    )


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """Every run under runs_dir, newest first."""
    runs_dir = Path(runs_dir).expanduser()
    if not runs_dir.is_dir():
        return []
    summaries = [summarize_run(child) for child in runs_dir.iterdir() if child.is_dir()]
    found = [s for s in summaries if s is not None]
    return sorted(found, key=lambda s: s.name, reverse=True)


def is_interrupted(run_dir: Path) -> bool:
    """Status says running but nobody holds the run's lock: its trainer is gone."""
    status, _ = read_status(run_dir)
    return status == "running" and not is_locked(run_dir)


def resolve_run(path_or_name: str, runs_dir: str = "runs") -> Path:
    """Accept a run folder path or a run name inside runs_dir."""
    candidate = Path(path_or_name).expanduser()
    for option in (candidate, Path(runs_dir).expanduser() / path_or_name):
        if (option / "config.toml").is_file():
            return option
    raise WorkbenchError(f"{path_or_name} is not a run folder (no config.toml found)")


def folders_recording(runs_dir: Path, key: str, value: str) -> list[Path]:
    """The run folders whose run.json records `key` = `value` (a torchrun job's id, or the
    run_id a parent process gave its trainer): how a run is found by the id it was given."""
    if not value or not Path(runs_dir).is_dir():
        return []
    found = []
    for info in Path(runs_dir).glob("*/run.json"):
        try:
            recorded = json.loads(info.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if recorded == value:
            found.append(info.parent)
    return found
