"""What a run needs before its first step: its data, loaded with notices, and the facts run.json keeps."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn

from workbench.core.config import RunConfig
from workbench.core.data.load import load_dataset
from workbench.core.data.types import Dataset
from workbench.core.events import EventSink, Notice
from workbench.core.models import count_parameters
from workbench.core.training.control import TrainControl
from workbench.core.training.device import describe_device
from workbench.core.training.parts import Recipe
from workbench.core.wording import count as counted


def load_run_data(config: RunConfig, emit: EventSink, control: TrainControl) -> Dataset:
    """The run's data set with its validation split; progress and warnings arrive as Notices,
    and a stop asked for while decoding ends the load (StopRequested)."""
    started = time.perf_counter()
    data = load_dataset(
        config.dataset, data_dir=config.resolved_data_dir(), image_size=config.image_size,
        seed=config.seed, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
        stream_over_mb=config.stream_over_mb, resize=config.resize,
        log=lambda message: emit(Notice(message)),
        warn=lambda message: emit(Notice(message, "warning")),
        should_stop=lambda: control.stop_requested,
    )
    shape = f"{data.image_size}x{data.image_size}x{data.channels}"
    val = f" / {len(data.val)} validation" if data.val is not None else ""
    emit(Notice(
        f"data: {data.name}, {len(data.train)} train{val} / {len(data.test)} test images, {shape}, "
        f"{counted(data.num_classes, 'class')} ({time.perf_counter() - started:.1f} s)"
    ))
    return data


def run_info(
    config: RunConfig, data: Dataset, model: nn.Module, model_options: dict[str, Any], recipe: Recipe,
    batch_size: int, device: torch.device,
) -> dict[str, Any]:
    """run.json: what export, predict, the runs list and a resume need to know without the data."""
    return {
        "arch": config.arch, "model_options": model_options, "recipe": recipe.record(),
        "dataset": data.name, "classes": list(data.classes), "channels": data.channels,
        "image_size": data.image_size, "resize": config.resize, "mean": list(data.mean), "std": list(data.std),
        "params": count_parameters(model), "train_size": len(data.train),
        "val_size": len(data.val) if data.val is not None else 0, "test_size": len(data.test),
        "batch_size": batch_size, "skipped_files": data.skipped, "device": describe_device(device),
    }
