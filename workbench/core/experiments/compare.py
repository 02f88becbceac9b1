"""Compare run folders: the settings that differ, best and final test accuracy, time and speed.

Reads only config.toml, status and metrics.jsonl, so a run whose data folder is gone compares
like any other. A run whose metrics.jsonl is missing or torn is still listed, marked with what
is wrong, and never hides the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core import runs
from workbench.core.config import SETTINGS
from workbench.core.errors import WorkbenchError
from workbench.core.safe_read import NotReadable, read_text

DECLARED = {item.name: item for item in SETTINGS}
METRIC_COLUMNS = ("status", "best epoch", "best val", "best test", "final test", "time", "images/s")


@dataclass(frozen=True)
class RunFigures:
    path: Path
    name: str
    status: str
    settings: dict[str, Any]
    epochs_done: int = 0
    best_epoch: int | None = None
    best_val_acc: float | None = None
    best_test_acc: float | None = None  # the best epoch's model on the test split
    final_test_acc: float | None = None  # the last model on the test split
    time_s: float | None = None  # wall time of its training sessions, pauses excluded
    images_per_s: float | None = None  # mean training speed over its epochs
    problem: str = ""  # what is wrong with its files ("" when nothing)
    sweep: str = ""
    reason: str = ""  # why it stopped, was pruned or failed (its status file's second line)
    trial: int | None = None  # its number in a search study (run.json's "trial")
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # per-epoch train/held-out loss and acc

    def value(self, column: str) -> Any:
        """A column's value, for sorting by any column (settings included)."""
        return {"run": self.name, "trial": self.trial, "status": self.status, "best epoch": self.best_epoch,
                "best val": self.best_val_acc, "best test": self.best_test_acc, "final test": self.final_test_acc, "time": self.time_s,
                "images/s": self.images_per_s}.get(column, self.settings.get(column))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "status": self.status, "problem": self.problem,
                "sweep": self.sweep, "epochs_done": self.epochs_done, "best_epoch": self.best_epoch,
                "best_val_acc": self.best_val_acc, "best_test_acc": self.best_test_acc,
                "final_test_acc": self.final_test_acc, "time_s": self.time_s, "images_per_s": self.images_per_s,
                "reason": self.reason, "trial": self.trial, "settings": self.settings}


@dataclass(frozen=True)
class Comparison:
    runs: tuple[RunFigures, ...]
    differ: tuple[str, ...]  # settings whose values are not the same for every run
    same: dict[str, Any]  # the rest, with their one value
    sweep: str = ""  # set when every run came from one sweep
    # setting -> value -> mean best test accuracy of its finished runs (None: none finished yet)
    by_value: dict[str, dict[str, float | None]] = field(default_factory=dict)
    by_value_counts: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)  # (finished, started)
    sweep_jobs: int = 0  # the sweep's jobs, started or not (0: not known)

    @property
    def finished(self) -> int:
        return sum(run.status == "finished" for run in self.runs)

    def progress_line(self) -> str:
        """For a sweep: how much of it the means stand on ("3 of 4 finished; ...")."""
        total = max(self.sweep_jobs, len(self.runs))
        waiting = total - len(self.runs)
        line = f"sweep {self.sweep}: {self.finished} of {total} finished"
        if waiting:
            line += f", {waiting} not started"
        if self.finished < total:
            line += "; each mean is over finished runs only, and * marks a value with runs still to finish"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [run.to_dict() for run in self.runs], "differ": list(self.differ), "same": self.same,
                "sweep": self.sweep or None, "by_value": self.by_value,
                "by_value_runs": {key: {value: {"finished": done, "runs": runs} for value, (done, runs) in values.items()}
                                  for key, values in self.by_value_counts.items()},
                "sweep_jobs": self.sweep_jobs or None, "finished": self.finished}


def read_figures(run_dir: Path, sweep: str = "") -> RunFigures:
    """One run's figures; damage is reported in `problem`, never raised."""
    problems = []
    try:
        settings = runs.read_config(run_dir).to_dict()
    except WorkbenchError as error:
        settings, problems = {}, [f"config.toml unreadable ({error})"]
    status, reason = runs.read_status(run_dir)
    if status == "running" and runs.is_interrupted(run_dir):
        status = "interrupted"
    recipe = str(settings.get("recipe", "standard"))
    for key in settings:  # what its recipe does not read had no effect: no value to compare (shown -)
        if key in DECLARED and not DECLARED[key].reads(recipe):
            settings[key] = None
    info = _run_info(run_dir)
    if settings.get("image_size") == 0 and isinstance(info.get("image_size"), int):
        settings["image_size"] = info["image_size"]  # "the data set's own": the size it trained at
    trial = info.get("trial") if isinstance(info.get("trial"), dict) else {}
    rows, damaged = _read_rows(run_dir / "metrics.jsonl")
    if isinstance(damaged, str):
        problems.append(damaged)
    elif damaged is None:
        problems.append("metrics.jsonl missing")
    elif damaged:
        problems.append(f"metrics.jsonl torn ({damaged} unreadable line{'s' if damaged > 1 else ''})")
    epochs = runs.epoch_records(rows)
    ends = [row for row in rows if row.get("type") == "end"]
    last_end = ends[-1] if ends else {}
    best_acc, split, best_epoch = runs.best_of(epochs)
    final_test = last_end.get("final_test_acc")
    if final_test is None and epochs:
        final_test = epochs[-1].get("test_acc")
    best_test = last_end.get("best_test_acc")
    if best_test is None and split == "test":  # no validation split: the best epoch was picked on test
        best_test = best_acc
    time_s = sum(_number(row.get("elapsed_s")) or 0.0 for row in ends) if ends else (
        _number(epochs[-1].get("elapsed_s")) if epochs else None)
    speeds = [s for s in (_number(row.get("images_per_s")) for row in epochs) if s]
    return RunFigures(
        path=run_dir, name=run_dir.name, status=status, settings=settings,
        epochs_done=max((row["epoch"] for row in epochs), default=0),
        best_epoch=best_epoch,
        best_val_acc=best_acc if split == "val" else None, best_test_acc=_number(best_test),
        final_test_acc=_number(final_test), time_s=time_s,
        images_per_s=sum(speeds) / len(speeds) if speeds else None,
        problem="; ".join(problems), sweep=sweep, curves=_curves(epochs), reason=reason,
        trial=trial.get("number") if isinstance(trial.get("number"), int) else None,
    )


def _run_info(run_dir: Path) -> dict[str, Any]:
    """run.json, or {} when it is missing or unreadable (compare shows what it can)."""
    try:
        info = runs.read_run_info(run_dir)
    except (WorkbenchError, OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def compare(run_dirs: list[Path], sort_by: str = "", sweeps: dict[Path, str] | None = None,
            sweep_jobs: int = 0) -> Comparison:
    """`sweeps`: the sweep of run folders the caller knows (`compare --sweep` does); the rest are
    looked up in their runs folder's queue, all of one queue in one query. `sweep_jobs`: how many
    runs the sweep has in all, started or not (the queue knows)."""
    if not run_dirs:
        raise WorkbenchError("give at least one run folder to compare")
    run_dirs = [Path(path) for path in run_dirs]
    known = dict(sweeps or {})
    known.update(_sweeps_of([path for path in run_dirs if path not in known]))
    figures = [read_figures(path, known.get(path, "")) for path in run_dirs]
    keys = list(dict.fromkeys(key for run in figures for key in run.settings))
    readable = [run for run in figures if run.settings]
    differ = tuple(key for key in keys if len({_hashable(run.settings.get(key)) for run in readable}) > 1)
    recipes = {str(run.settings.get("recipe")) for run in readable}
    same = {key: readable[0].settings[key] for key in keys
            if key not in differ and readable and _worth_showing(key, recipes)}
    if sort_by:
        figures = sort_runs(figures, sort_by, differ)
    sweeps = {run.sweep for run in figures}
    sweep = sweeps.pop() if len(sweeps) == 1 else ""
    by_value, counts = _by_value(figures, differ) if sweep else ({}, {})
    return Comparison(tuple(figures), differ, same, sweep, by_value, counts, sweep_jobs if sweep else 0)


def _worth_showing(key: str, recipes: set[str]) -> bool:
    """A shared setting is worth a place on the "same for all" line when its declaration says it
    is compared and some run's recipe reads it (the speedrun's runs all share an unused lr)."""
    item = DECLARED.get(key)
    return item is None or (item.compared and any(item.reads(recipe) for recipe in recipes))


def same_line(result: Comparison) -> str:
    """The settings every run shares, in declaration order, as one line."""
    same = ", ".join(f"{key} {format_setting(value)}" for key, value in result.same.items())
    return f"same for all: {same}" if same else "no setting is the same for all"


def sort_runs(figures: list[RunFigures], column: str, differ: tuple[str, ...] = ()) -> list[RunFigures]:
    """Best first for accuracies and speed, shortest first for time, in order otherwise; empty cells last."""
    column = column.replace("-", " ").replace("_", " ") if column not in differ else column
    known = ("run", "trial") + METRIC_COLUMNS
    if column not in known and column.replace(" ", "_") not in differ:
        raise WorkbenchError(f"cannot sort by {column!r}; choose one of {', '.join(known + differ)}")
    column = column if column in known else column.replace(" ", "_")
    descending = column in ("best val", "best test", "final test", "images/s")
    present = [run for run in figures if run.value(column) is not None]
    missing = [run for run in figures if run.value(column) is None]
    return sorted(present, key=lambda run: _sort_key(run.value(column)), reverse=descending) + missing


def _sort_key(value: Any) -> Any:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def _by_value(figures: list[RunFigures], differ: tuple[str, ...]):
    """For a sweep: each swept setting's values with the mean best test accuracy of their finished
    runs (a running run's best so far would move the mean as it trains), and (finished, started)."""
    means: dict[str, dict[str, float | None]] = {}
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    for key in differ:
        groups: dict[str, list[RunFigures]] = {}
        for run in figures:
            groups.setdefault(format_setting(run.settings.get(key)), []).append(run)
        means[key], counts[key] = {}, {}
        for value, group in groups.items():
            scores = [score for run in group if run.status == "finished"
                      and (score := run.best_test_acc if run.best_test_acc is not None else run.final_test_acc) is not None]
            means[key][value] = sum(scores) / len(scores) if scores else None
            counts[key][value] = (sum(run.status == "finished" for run in group), len(group))
    return means, counts


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], int | str | None]:
    """(rows, unreadable line count); None when the file is missing, what is wrong when it is
    not a file a run wrote (a pipe, a folder, too large)."""
    try:
        lines = read_text(path, runs.METRICS_LIMIT, errors="replace").splitlines()
    except NotReadable as error:
        return [], f"metrics.jsonl skipped: {str(error).removeprefix(str(path) + ' ')}"
    except OSError:
        return [], None
    rows, bad = [], 0
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _curves(epochs: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in epochs:
        held = "val" if row.get("val_acc") is not None else "test"
        for name, key in (("train loss", "train_loss"), ("train acc", "train_acc"),
                          ("held-out loss", f"{held}_loss"), ("held-out acc", f"{held}_acc")):
            value = _number(row.get(key))
            if value is not None:
                curves.setdefault(name, []).append((int(row["epoch"]), value))
    return curves


def _sweeps_of(run_dirs: list[Path]) -> dict[Path, str]:
    """The sweep each run folder was trained for, from the queue of the folder it sits in; a
    queue that cannot be read gives no sweep (the comparison stands without it)."""
    from workbench.core.experiments.queue import JobQueue, same_path

    by_parent: dict[Path, list[Path]] = {}
    for path in run_dirs:
        by_parent.setdefault(path.parent, []).append(path)
    found: dict[Path, str] = {}
    for parent, paths in by_parent.items():
        queue = JobQueue(parent)
        try:
            sweeps = queue.sweeps_of(paths) if queue.exists else {}
        except WorkbenchError:
            continue
        found.update({path: sweeps[same_path(path)] for path in paths if same_path(path) in sweeps})
    return found


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def format_setting(value: Any) -> str:
    if value is None:
        return "-"  # not read by the run's recipe
    if isinstance(value, list):
        return ",".join(value) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "":
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)
