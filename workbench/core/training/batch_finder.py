"""The largest batch that fits in GPU memory for a model and image size: double until out of memory.

Each trial builds the run as fit() would at that batch size and trains a few steps through the
one loop (forward, backward, optimizer step: the memory a real step needs), then frees it. The
answer is the last size that worked. On a CPU memory rarely limits the batch, so it refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError
from workbench.core.events import EventSink
from workbench.core.training.control import StopAfterSteps, TrainControl
from workbench.core.training.loop import train_one_epoch
from workbench.core.training.preparation import prepare_trial
from workbench.core.training.report import Meter

TRIAL_STEPS = 2
START, LIMIT = 16, 65_536


@dataclass
class BatchSearch:
    largest: int | None  # the largest batch that trained; None when even the first one did not fit
    tried: list[tuple[int, bool]] = field(default_factory=list)  # (batch size, fitted)
    reason: str = ""  # why the search stopped growing


def find_batch_size(
    config: RunConfig,
    emit: EventSink = lambda event: None,
    *,
    start: int = START,
    limit: int = LIMIT,
    allow_cpu: bool = False,
    on_trial: Callable[[int, bool], None] = lambda size, fitted: None,
) -> BatchSearch:
    """Double from `start` until a trial runs out of memory, the split runs out of images or `limit`."""
    if config.device == "cpu" and not allow_cpu:
        raise ConfigError("device", "the batch-size finder measures GPU memory; on the CPU memory rarely limits the batch")
    search = BatchSearch(largest=None)
    size, data = start, None
    while True:
        fitted, data = _trial(config, emit, size, data)
        search.tried.append((size, fitted))
        on_trial(size, fitted)
        if not fitted:
            search.reason = f"batch {size} ran out of memory"
            break
        search.largest = size
        if size * 2 > limit:
            search.reason = f"reached the limit of {limit}"
            break
        if data is not None and size >= len(data.train):
            search.reason = "the whole training split fits in one batch"
            break
        size *= 2
    return search


def _trial(config: RunConfig, emit: EventSink, size: int, data):
    """(whether `size` trained, the data set to reuse for the next trial)."""
    trial = None
    try:
        trial = prepare_trial(config, emit, TrainControl(), batch_size=size, data=data)
        data = trial.data
        built = trial.built
        meter = Meter(lambda event: None, trial.device, TrainControl(),
                      steps_per_epoch=len(built.train), total_steps=TRIAL_STEPS, lr=lambda: built.parts.lr,
                      batch_size=size)
        meter.start_epoch(1, 0, 0)
        train_one_epoch(built.model, built.train, built.train.epoch_order(), built.parts, StopAfterSteps(TRIAL_STEPS),
                        meter, epoch=1, amp_dtype=trial.amp_dtype)
        meter.flush()
        return True, data
    except torch.cuda.OutOfMemoryError:
        return False, data
    finally:
        del trial
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
