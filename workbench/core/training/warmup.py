"""Compile warm-up: run a few steps and every evaluation once, untimed, then put everything back.

torch.compile and cuDNN's algorithm search happen on first use of each shape; doing that here
keeps them out of the run's timings (airbench's rule). The steps go through the one training
loop, on the real model, optimizer and batches; afterwards weights, optimizer, schedule,
averager, scaler, batch generators and global RNGs are exactly as they were before.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch
import torch.nn as nn

from workbench.core.events import EventSink, Notice
from workbench.core.training.batches import DeviceBatches
from workbench.core.training.control import StopAfterSteps, TrainControl
from workbench.core.training.loop import evaluate, train_one_epoch
from workbench.core.training.parts import TrainingParts, View
from workbench.core.training.report import Meter

WARMUP_STEPS = 3


def maybe_compile(wanted: bool, model: nn.Module, device: torch.device, distributed: bool, emit: EventSink,
                  warm: Callable[[nn.Module], None]) -> tuple[nn.Module, float]:
    """(the model to train and evaluate, seconds of warm-up): compiled and warmed up when asked
    for and worth it (CUDA, one process), else the model as it is, with a Notice saying why."""
    if not wanted:
        return model, 0.0
    if distributed:
        emit(Notice("torch.compile is not combined with data-parallel training yet: training uncompiled"))
        return model, 0.0
    if device.type != "cuda":
        emit(Notice("torch.compile is skipped off CUDA: its warm-up would outlast the gain here"))
        return model, 0.0
    compiled = torch.compile(model)
    started = time.perf_counter()
    warm(compiled)
    seconds = time.perf_counter() - started
    emit(Notice(f"compiled and warmed up in {seconds:.1f} s (not counted in the timings)"))
    return compiled, seconds


def warm_up(
    train_model: nn.Module,
    model: nn.Module,
    parts: TrainingParts,
    train: DeviceBatches,
    held_out: dict[str, DeviceBatches],
    num_classes: int,
    views: tuple[View, ...],
    amp_dtype: torch.dtype | None,
) -> None:
    saved_model = {name: value.detach().clone() for name, value in model.state_dict().items()}
    saved_optimizer = copy.deepcopy(parts.optimizer.state_dict())
    saved_scheduler = parts.scheduler.state_dict()
    saved_scaler = parts.scaler.state_dict()
    saved_averager = copy.deepcopy(parts.averager.state_dict()) if parts.averager is not None else None
    saved_loader = train.state()
    saved_rng = torch.get_rng_state()
    saved_cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []

    meter = Meter(lambda event: None, train.device, TrainControl(),
                  steps_per_epoch=len(train), total_steps=len(train), lr=lambda: parts.lr,
                  batch_size=train.batch_size)
    meter.start_epoch(1, 0, 0)
    train_one_epoch(train_model, train, train.epoch_order(), parts, StopAfterSteps(WARMUP_STEPS), meter, epoch=1,
                    amp_dtype=amp_dtype)
    meter.flush()
    for name, batches in held_out.items():
        evaluate(train_model, batches, num_classes, views=views, amp_dtype=amp_dtype, split=name)

    model.load_state_dict(saved_model)  # copies into the same tensors: the compiled graphs stay valid
    parts.optimizer.load_state_dict(saved_optimizer)
    parts.scheduler.load_state_dict(saved_scheduler)
    parts.scaler.load_state_dict(saved_scaler)
    if saved_averager is not None:
        parts.averager.load_state_dict(saved_averager)
    train.load_state(saved_loader)
    torch.set_rng_state(saved_rng)
    if saved_cuda_rng:
        torch.cuda.set_rng_state_all(saved_cuda_rng)
