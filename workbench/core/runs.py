"""Run folders: create one per training run, record status and metrics, list past runs.

A run folder is readable without the app:
    config.toml      the RunConfig that started it
    status           running | finished | stopped | failed (one word, then an optional reason line)
    metrics.jsonl    one JSON object per line: {"type": "epoch", ...} or {"type": "step", ...}
    run.json         facts learned at start: classes, mean/std, params, device, pid
    checkpoints/     last.pt and best.pt
    images/          inspection PNGs with JSON sidecars
    export/          the exported model
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError

STATUSES = ("running", "finished", "stopped", "failed")


def create_run_dir(config: RunConfig, now: datetime | None = None) -> Path:
    """Make a fresh, uniquely named run folder, checking first that it can be written."""
    runs_dir = Path(config.runs_dir).expanduser()
    check_writable(runs_dir)
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{config.arch}"
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
            "choose another with --runs-dir"
        ) from None
    free_mb = _free_mb(runs_dir)
    if free_mb is not None and free_mb < need_mb:
        raise WorkbenchError(
            f"runs folder {runs_dir} has only {free_mb:.0f} MB free; free some space or "
            "choose another with --runs-dir"
        )


def _free_mb(path: Path) -> float | None:
    try:
        stats = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize / 1e6


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_status(run_dir: Path, status: str, reason: str = "") -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    write_text_atomic(run_dir / "status", status + ("\n" + reason if reason else "") + "\n")


def read_status(run_dir: Path) -> tuple[str, str]:
    """(status, reason); a missing file reads as ("unknown", "")."""
    try:
        lines = (run_dir / "status").read_text(encoding="utf-8").splitlines()
    except OSError:
        return "unknown", ""
    status = lines[0].strip() if lines else "unknown"
    return status, "\n".join(lines[1:]).strip()


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    write_text_atomic(run_dir / "run.json", json.dumps(info, indent=2) + "\n")


def read_run_info(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All records in order; a torn last line (crash mid-write) is ignored."""
    records = []
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def epoch_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("type") == "epoch"]


def read_config(run_dir: Path) -> RunConfig:
    """The config a run was started with; its data folder may since have moved or gone."""
    return RunConfig.from_toml(run_dir / "config.toml", check_paths=False)


@dataclass(frozen=True)
class RunSummary:
    path: Path
    name: str
    arch: str
    dataset: str
    epochs: int  # configured
    epochs_done: int
    best_acc: float | None
    status: str
    started: datetime | None


_STAMP = re.compile(r"^(\d{8}-\d{6})")


def summarize_run(run_dir: Path) -> RunSummary | None:
    """A one-line view of a run folder, or None when the folder is not a run."""
    if not (run_dir / "config.toml").is_file():
        return None
    try:
        config = read_config(run_dir)
        arch, dataset, epochs = config.arch, config.dataset, config.epochs
    except WorkbenchError:
        arch, dataset, epochs = "?", "?", 0
    epochs_seen = epoch_records(read_metrics(run_dir))
    best = max((r["test_acc"] for r in epochs_seen), default=None)
    match = _STAMP.match(run_dir.name)
    started = datetime.strptime(match.group(1), "%Y%m%d-%H%M%S") if match else None
    status, _ = read_status(run_dir)
    if status == "running" and is_interrupted(run_dir):
        status = "interrupted"
    return RunSummary(
        path=run_dir,
        name=run_dir.name,
        arch=arch,
        dataset=dataset,
        epochs=epochs,
        epochs_done=max((r["epoch"] for r in epochs_seen), default=0),
        best_acc=best,
        status=status,
        started=started,
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
    """Status says running but the process that wrote it is gone."""
    status, _ = read_status(run_dir)
    if status != "running":
        return False
    pid = read_run_info(run_dir).get("pid")
    if not isinstance(pid, int):
        return True
    return not _process_alive(pid)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_run(path_or_name: str, runs_dir: str = "runs") -> Path:
    """Accept a run folder path or a run name inside runs_dir."""
    candidate = Path(path_or_name).expanduser()
    for option in (candidate, Path(runs_dir).expanduser() / path_or_name):
        if (option / "config.toml").is_file():
            return option
    raise WorkbenchError(f"{path_or_name} is not a run folder (no config.toml found)")
