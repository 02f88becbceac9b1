"""Plain event objects the engine reports; UIs render them, nothing here knows a UI.

Every event is also a row of the run's metrics.jsonl: its fields plus "type" (ROW_TYPES), so
the file, the live dashboard, a dashboard following the folder from another process and a
child process's JSON-lines answer all speak one schema (`to_row` / `from_row` round-trip).
Accuracies are fractions (0..1); every learning rate is the optimizer's real rate; every time
excludes time spent paused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class RunStarted:
    run_dir: Path
    arch: str
    params: int
    device: str  # "cuda", "mps" or "cpu"
    device_name: str  # human name, e.g. "NVIDIA H100 80GB HBM3" or "CPU (2 threads)"
    dataset: str
    classes: tuple[str, ...]
    train_size: int
    test_size: int
    epochs: int
    steps_per_epoch: int
    start_epoch: int = 0  # epochs done before this session (> 0 when resuming)
    start_step: int = 0  # optimizer steps done before this session
    val_size: int = 0  # 0: no validation split, so no epoch is selected as the best
    recipe: str = "standard"
    batch_size: int = 0


@dataclass(frozen=True)
class StepMetrics:
    """A sample from inside an epoch; sent a few times a second at most."""

    epoch: int  # 1-based
    step: int  # steps done in this epoch
    steps_per_epoch: int
    global_step: int
    loss: float  # mean train loss since the previous sample
    acc: float  # train accuracy since the previous sample, 0..1
    lr: float  # of the last step
    images_per_s: float
    elapsed_s: float
    eta_s: float
    gpu_memory_mb: float | None = None


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    epochs: int
    global_step: int
    train_loss: float  # mean over the epoch's steps (since the resume, for a resumed epoch)
    train_acc: float
    val_loss: float | None  # the validation split, when it was evaluated after this epoch
    val_acc: float | None
    test_loss: float | None  # the test split: after the last epoch (every epoch when there is no validation split)
    test_acc: float | None
    best_epoch: int | None  # highest validation accuracy so far; None: no validation split, or not evaluated yet
    best_val_acc: float | None
    lr: float
    images_per_s: float
    epoch_s: float
    elapsed_s: float
    eta_s: float
    per_class_acc: dict[str, float] = field(default_factory=dict)  # of `per_class_split` (recall per class)
    per_class_split: str | None = None  # "val" or "test"; None when nothing was evaluated
    per_class_precision: dict[str, float] = field(default_factory=dict)  # of `per_class_split`
    per_class_f1: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)  # a recipe's own figures, e.g. one-view accuracy under TTA

    @property
    def evaluated(self) -> bool:
        return self.per_class_split is not None

    @property
    def held_out(self) -> tuple[str, float, float] | None:
        """(split, loss, accuracy) the dashboard charts: validation when there is one, else test."""
        if self.val_acc is not None:
            return "val", float(self.val_loss), self.val_acc
        if self.test_acc is not None:
            return "test", float(self.test_loss), self.test_acc
        return None


@dataclass(frozen=True)
class CheckpointSaved:
    path: Path
    epoch: int  # completed epochs
    best: bool
    epoch_step: int = 0  # steps into the next epoch, for a run stopped inside one


@dataclass(frozen=True)
class ImagesSaved:
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop training."""

    message: str
    level: str = "info"  # "info" or "warning"


@dataclass(frozen=True)
class StatusChanged:
    """The trainer paused or went on (the engine says so from its own thread, whoever asked)."""

    status: str  # "paused" or "running"
    reason: str = ""  # who asked, e.g. "the control file"


@dataclass(frozen=True)
class Evaluating:
    """Progress through a held-out split (a few times a second at most): the end of a run can
    spend many seconds on validation and test after its last step."""

    split: str  # "val" or "test"
    images_done: int  # on this process (a data-parallel run: rank 0's shard)
    images: int


@dataclass(frozen=True)
class PhaseChanged:
    """The recipe's phase from this epoch on (fine-tuning: the head alone, then every layer)."""

    epoch: int
    phase: str  # in words, e.g. "head only (epochs 1-2; the backbone is frozen)"


@dataclass(frozen=True)
class Finished:
    run_dir: Path | None  # None only when stopped while the data was prepared, before any run began
    status: str  # "finished", "stopped", or "pruned" (a search's pruner stopped it; the reason says why)
    epochs_done: int
    elapsed_s: float  # wall time of this fit() call, pauses excluded
    best_epoch: int | None = None  # by validation accuracy; None: no validation split or no evaluation
    best_val_acc: float | None = None
    best_test_acc: float | None = None  # the best epoch's model on the test split
    final_test_acc: float | None = None  # the last model on the test split; None when it was not evaluated
    steps_done: int = 0
    train_s: float = 0.0  # training + evaluation on the device's clock: no data loading, warm-up or files
    warmup_s: float = 0.0  # torch.compile warm-up before the first timed step (0 when not compiled)
    reason: str = ""  # why it stopped, when it was not the user (e.g. "SIGTERM")

    @property
    def evaluated(self) -> bool:
        return self.final_test_acc is not None or self.best_val_acc is not None

    def summary(self) -> str:
        """How the run ended in one sentence; every accuracy names its split, and a run that was
        never evaluated says so instead of showing 0%."""
        if self.reason.startswith("early stop"):
            verb = "finished early"
        elif self.status in ("finished", "pruned"):
            verb = self.status
        else:
            verb = "stopped by SIGTERM" if self.reason == "SIGTERM" else "stopped"
        plural = "" if self.epochs_done == 1 else "s"
        parts = [f"{verb} after {self.epochs_done} epoch{plural} ({self.steps_done} steps)"]
        if self.best_epoch is not None:
            tested = f", test {self.best_test_acc:.2%}" if self.best_test_acc is not None else ""
            parts.append(f"best epoch {self.best_epoch} by validation {self.best_val_acc:.2%}{tested}")
        if self.final_test_acc is not None:
            parts.append(f"last model test {self.final_test_acc:.2%}")
        if not self.evaluated:
            parts.append("no evaluation happened yet (stopped before an epoch ended): resume to go on")
        if self.reason.startswith("early stop"):
            parts.append(self.reason)
        return "; ".join(parts)


@dataclass(frozen=True)
class Failed:
    run_dir: Path | None
    reason: str  # one human sentence
    bad_input: bool = False  # caused by a setting, file or folder the user can fix
    field: str | None = None  # the RunConfig setting at fault, when there is one


Event = (
    RunStarted | StepMetrics | EpochMetrics | CheckpointSaved | ImagesSaved | Notice | StatusChanged
    | PhaseChanged | Finished | Failed
)
EventSink = Callable[[Event], None]

ROW_TYPES: dict[type, str] = {
    RunStarted: "start", StepMetrics: "step", EpochMetrics: "epoch", CheckpointSaved: "checkpoint",
    ImagesSaved: "images", Notice: "notice", StatusChanged: "status", PhaseChanged: "phase", Finished: "end",
    Evaluating: "eval",
    Failed: "failed",
}
_EVENT_OF = {name: kind for kind, name in ROW_TYPES.items()}
_MAPPINGS = {"per_class_acc", "per_class_precision", "per_class_f1", "extra"}


def to_row(event: Event) -> dict[str, Any]:
    """The metrics.jsonl row of an event: its fields plus "type"; paths as strings."""
    row: dict[str, Any] = {"type": ROW_TYPES[type(event)]}
    for key, value in dataclasses.asdict(event).items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [str(item) if isinstance(item, Path) else item for item in value]
        row[key] = value
    return row


def from_row(row: dict[str, Any], run_dir: Path | None = None) -> Event | None:
    """A row back as the event it was; None for a row of an unknown type or a damaged one (a
    field it must have is missing, or a value is not of its field's type), so one bad row is
    skipped and never breaks what reads the rows after it.

    Fields with a default that a row of an older version lacks take the default; `run_dir`, when
    given, replaces the folder the row names (a run folder read after it was moved or copied).
    """
    kind = _EVENT_OF.get(row.get("type")) if isinstance(row, dict) else None
    if kind is None:
        return None
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(kind):
        if spec.name in row:
            if not _fits(row[spec.name], str(spec.type)):
                return None
            values[spec.name] = row[spec.name]
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            if spec.name != "run_dir" or run_dir is None:
                return None
            values[spec.name] = None
    for key in _MAPPINGS & values.keys():
        values[key] = values[key] if isinstance(values[key], dict) else {}
    if "run_dir" in values:
        values["run_dir"] = run_dir if run_dir is not None else (Path(values["run_dir"]) if values["run_dir"] else None)
    if isinstance(values.get("path"), str):
        values["path"] = Path(values["path"])
    if kind is ImagesSaved:
        values["paths"] = tuple(Path(p) for p in values.get("paths") or () if isinstance(p, str))
    if kind is RunStarted:
        values["classes"] = tuple(str(name) for name in values.get("classes") or ())
    try:
        return kind(**values)
    except TypeError:
        return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_KINDS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": _number,
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "Path": lambda v: isinstance(v, str),
    "None": lambda v: v is None,
    "tuple[str, ...]": lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
    "tuple[Path, ...]": lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
    "dict[str, float]": lambda v: isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items()),
}


def _fits(value: Any, annotation: str) -> bool:
    """Whether a row's value has the type its event field declares (annotations are strings here)."""
    return any(_KINDS.get(part.strip(), lambda v: True)(value) for part in annotation.split("|"))
