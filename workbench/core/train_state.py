"""What a checkpoint holds and how a resumed run gets it back, to the exact step."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from workbench.core import checkpoint as ckpt
from workbench.core.config import RunConfig
from workbench.core.data import Dataset
from workbench.core.errors import WorkbenchError
from workbench.core.events import EventSink, Notice
from workbench.core.loader import DeviceBatches

CHECKPOINT_FORMAT = 1


@dataclass
class Progress:
    """Where a run is; saved in every checkpoint so a resume continues exactly."""

    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # steps done in a partly trained epoch (0 = at an epoch boundary)
    global_step: int = 0
    best_acc: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    order_state: torch.Tensor | None = None  # shuffle generator state at the partial epoch's start


@dataclass
class TrainingParts:
    """The stateful objects of a run, besides its Progress."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batches: DeviceBatches  # the training batches: their generators drive order and augmentation


def checkpoint_state(
    parts: TrainingParts, progress: Progress, batch_size: int, config: RunConfig, data: Dataset
) -> dict[str, Any]:
    """A plain dict of tensors and containers: loadable with weights_only=True."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "loader": parts.batches.state(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "progress": {
            "epoch": progress.epoch,
            "epoch_step": progress.epoch_step,
            "global_step": progress.global_step,
            "best_acc": progress.best_acc,
            "order_state": progress.order_state,
        },
        "history": progress.history,
        "batch_size": batch_size,  # may be smaller than config's after an out-of-memory retry
        "config": config.to_dict(),
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
    }


def load_resume_state(run_dir: Path, epochs: int, emit: EventSink) -> dict[str, Any]:
    """The newest usable checkpoint of a run, after cleaning up interrupted writes."""
    folder = run_dir / "checkpoints"
    for leftover in ckpt.clean_temp_files(folder):
        emit(Notice(f"removed an unfinished checkpoint write: {leftover.name}", "warning"))
    state, path, problems = ckpt.load_latest(folder, map_location="cpu")
    for problem in problems:
        emit(Notice(f"{problem}; using an earlier checkpoint", "warning"))
    saved = state["progress"]
    if saved["epoch"] >= epochs and not saved["epoch_step"]:
        raise WorkbenchError(
            f"{run_dir.name} has already trained {saved['epoch']} epochs; resume with --epochs "
            f"greater than {saved['epoch']}"
        )
    emit(Notice(f"resuming from {path.name} (epoch {saved['epoch']}, step {saved['global_step']})"))
    return state


def restore(state: dict[str, Any], parts: TrainingParts, config: RunConfig) -> None:
    """Put weights, optimizer, scaler, batch generators and global RNGs back as saved."""
    parts.model.load_state_dict(state["model"])
    saved_optimizer = state["config"].get("optimizer")
    if saved_optimizer != config.optimizer:
        raise WorkbenchError(
            f"the checkpoint's optimizer state is for {saved_optimizer!r}, not "
            f"{config.optimizer!r}; resume with the run's own optimizer"
        )
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scaler.load_state_dict(state["scaler"])
    parts.batches.load_state(state["loader"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"].get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def progress_from(state: dict[str, Any]) -> Progress:
    saved = state["progress"]
    return Progress(
        epoch=saved["epoch"],
        epoch_step=saved["epoch_step"],
        global_step=saved["global_step"],
        best_acc=saved["best_acc"],
        history=list(state.get("history", [])),
        order_state=saved.get("order_state"),
    )
