"""The engine's side of `workbench bench`: fit() on the prepared files, timed from its own events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from workbench.bench.reference import (
    WARMUP_STEPS,
    BenchData,
    EpochTiming,
    SideResult,
    cpu_seconds,
)
from workbench.bench.settings import BenchSettings
from workbench.core.errors import WorkbenchError
from workbench.core.training.control import StopAfterSteps, TrainControl


class EngineFailed(Exception):
    """fit() reported a failure that is not the user's input (a bug or a broken library)."""


# ---- the engine side -------------------------------------------------------------------------


def run_engine(
    settings: BenchSettings, data: BenchData, workdir: Path, on_epoch: Callable[[EpochTiming], None]
) -> SideResult:
    """fit() on the prepared folder, timed from its own events (RunStarted, then each EpochMetrics)."""
    from workbench.core.events import EpochMetrics, Failed, RunStarted
    from workbench.core.training.engine import fit

    config = settings.config.replace(
        dataset=str(data.folder), data_dir=str(data.engine_data_dir),
        image_size=data.dataset.image_size, runs_dir=str(workdir / "runs"),
        val_fraction=0.0,  # like the reference: train on every image, test after each epoch
    )
    result = SideResult("engine")
    clock: dict[str, float] = {}
    failures: list[Failed] = []
    train_size = len(data.dataset.train)

    def sink(event) -> None:
        now = time.perf_counter()
        if isinstance(event, RunStarted):
            clock["start"] = clock["last"] = now
            clock["cpu"] = cpu_seconds()
            clock["images"] = min(event.steps_per_epoch * config.batch_size, train_size)  # drop_last
        elif isinstance(event, EpochMetrics):
            train_s = clock["images"] / max(event.images_per_s, 1e-9)
            cpu = cpu_seconds()
            timing = EpochTiming(
                event.epoch, int(clock["images"]), train_s, event.epoch_s - train_s,
                now - clock["last"], cpu - clock["cpu"], event.test_acc,
            )
            clock["last"], clock["cpu"] = now, cpu
            result.epochs.append(timing)
            target = settings.target_acc
            if target is not None and result.time_to_target_s is None and event.test_acc >= target:
                result.time_to_target_s = now - clock["start"]
            on_epoch(timing)
        elif isinstance(event, Failed):
            failures.append(event)

    # fit() turns on cudnn.benchmark for the process; the reference must run with the default.
    benchmark = torch.backends.cudnn.benchmark
    try:
        # Warm-up: the same fit() on the same data, stopped after a few steps, in its own runs folder.
        fit(config.replace(runs_dir=str(workdir / "warm-up")), lambda event: None, StopAfterSteps(WARMUP_STEPS))
        fit(config, sink, TrainControl())
    finally:
        torch.backends.cudnn.benchmark = benchmark
    if failures:
        if failures[0].bad_input:
            raise WorkbenchError(failures[0].reason)
        raise EngineFailed(failures[0].reason)
    return result
