"""Glue between fit() and the speedrun recipe: the run folder, checkpoint and events around it."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.config import RunConfig
from workbench.core.control import TrainControl
from workbench.core.data import Dataset
from workbench.core.events import CheckpointSaved, EventSink, Finished

PRESET = "cifar10-speedrun"


def is_speedrun(config: RunConfig) -> bool:
    return config.arch == "speedrun" and config.preset == PRESET


def run_speedrun(
    config: RunConfig, data: Dataset, device: torch.device, run_dir: Path,
    emit: EventSink, control: TrainControl, started: float,
) -> None:
    """Train with fit_speedrun, then save a checkpoint export can use and report the end."""
    from workbench.core.speedrun_train import fit_speedrun

    result = fit_speedrun(config, emit, control, data, device, run_dir)
    acc = result.tta_acc if result.tta_acc is not None else 0.0
    state = {
        "format": 1,
        "model": result.model.state_dict(),
        "progress": {"epoch": result.epochs, "epoch_step": 0, "global_step": result.steps,
                     "best_acc": acc, "order_state": None},
        "history": result.history,
        "batch_size": config.batch_size,
        "config": config.to_dict(),
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
    }
    folder = run_dir / "checkpoints"
    if ckpt.all_finite(result.model):
        emit(CheckpointSaved(ckpt.save_last(state, folder), result.epochs, best=False))
        if not result.stopped:
            ckpt.save_atomic(state, folder / ckpt.BEST)
            emit(CheckpointSaved(folder / ckpt.BEST, result.epochs, best=True))
    status = "stopped" if result.stopped else "finished"
    runs.write_status(run_dir, status)
    emit(Finished(run_dir=run_dir, status=status, epochs_done=result.epochs, best_acc=acc,
                  final_acc=acc, elapsed_s=time.perf_counter() - started))
