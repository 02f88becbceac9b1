"""Plain event objects the engine reports; UIs render them, nothing here knows a UI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


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
    start_epoch: int = 0  # > 0 when resuming


@dataclass(frozen=True)
class StepMetrics:
    """A sample from inside an epoch; sent a few times a second at most."""

    epoch: int  # 1-based
    step: int  # steps done in this epoch
    steps_per_epoch: int
    global_step: int
    loss: float  # mean train loss since the previous sample
    acc: float  # train accuracy since the previous sample, 0..1
    lr: float
    images_per_s: float
    elapsed_s: float
    eta_s: float
    gpu_memory_mb: float | None = None


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    epochs: int
    global_step: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    best_acc: float
    lr: float
    images_per_s: float
    epoch_s: float
    elapsed_s: float
    eta_s: float
    per_class_acc: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointSaved:
    path: Path
    epoch: int
    best: bool


@dataclass(frozen=True)
class ImagesSaved:
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop training."""

    message: str
    level: str = "info"  # "info" or "warning"


@dataclass(frozen=True)
class Finished:
    run_dir: Path | None  # None only when stopped while the data was prepared, before any run began
    status: str  # "finished" or "stopped"
    epochs_done: int
    best_acc: float
    final_acc: float
    elapsed_s: float


@dataclass(frozen=True)
class Failed:
    run_dir: Path | None
    reason: str  # one human sentence
    bad_input: bool = False  # caused by a setting, file or folder the user can fix


Event = (
    RunStarted | StepMetrics | EpochMetrics | CheckpointSaved | ImagesSaved | Notice | Finished | Failed
)
EventSink = Callable[[Event], None]
