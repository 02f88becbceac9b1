"""A finished 3-epoch run as the engine would report it, with smooth, fixed numbers (for snapshots)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from workbench.core import runs
from workbench.core.config import RunConfig
from workbench.core.events import (
    CheckpointSaved,
    EpochMetrics,
    Finished,
    ImagesSaved,
    Notice,
    RunStarted,
    StepMetrics,
    to_row,
)

CLASSES = ("circle", "square", "triangle", "cross", "ring", "horizontal stripes", "vertical stripes", "checkerboard")
RUN_NAME = "20250101-120000-basic_cnn"
EPOCHS, STEPS, SAMPLES = 3, 40, 8


def recorded_events(run_dir: Path) -> list:
    """A finished 3-epoch run as the engine would report it, with smooth, fixed numbers."""
    events: list = [
        Notice("no GPU found: training on the CPU", "warning"),
        RunStarted(run_dir, "basic_cnn", 62_958, "cpu", "CPU (2 threads)", "shapes", CLASSES,
                   9_000, 2_000, EPOCHS, STEPS, val_size=1_000, batch_size=128),
    ]
    for epoch in range(1, EPOCHS + 1):
        for sample in range(1, SAMPLES + 1):
            step = sample * STEPS // SAMPLES
            t = (epoch - 1) + step / STEPS
            events.append(StepMetrics(
                epoch=epoch, step=step, steps_per_epoch=STEPS, global_step=(epoch - 1) * STEPS + step,
                loss=2.3 * math.exp(-0.6 * t) + 0.05 * math.sin(7 * t), acc=1 - 0.9 * math.exp(-0.8 * t),
                lr=0.003, images_per_s=1500.0, elapsed_s=8.0 * t, eta_s=8.0 * (EPOCHS - t),
            ))
        val_acc = 0.55 + 0.1 * epoch
        last = epoch == EPOCHS
        events.append(EpochMetrics(
            epoch=epoch, epochs=EPOCHS, global_step=epoch * STEPS, train_loss=2.3 * math.exp(-0.6 * epoch),
            train_acc=1 - 0.9 * math.exp(-0.8 * epoch), val_loss=2.0 * math.exp(-0.55 * epoch),
            val_acc=val_acc, test_loss=2.05 * math.exp(-0.55 * epoch) if last else None,
            test_acc=val_acc - 0.01 if last else None, best_epoch=epoch, best_val_acc=val_acc,
            lr=0.003, images_per_s=1500.0, epoch_s=8.0, elapsed_s=8.0 * epoch, eta_s=8.0 * (EPOCHS - epoch),
            per_class_acc={name: min(1.0, val_acc + 0.04 * (i - 4)) for i, name in enumerate(CLASSES)},
            per_class_split="val",
        ))
        events.append(CheckpointSaved(run_dir / "checkpoints" / "last.pt", epoch, best=False))
        events.append(CheckpointSaved(run_dir / "checkpoints" / "best.pt", epoch, best=True))
        if epoch in (1, EPOCHS):
            events.append(ImagesSaved((run_dir / "images" / "confusion.png", run_dir / "images" / "top_losses.png")))
    events.append(Finished(run_dir, "finished", EPOCHS, 24.0, best_epoch=EPOCHS, best_val_acc=0.85,
                           best_test_acc=0.84, final_test_acc=0.84, steps_done=EPOCHS * STEPS, train_s=24.0))
    return events


def write_recorded_run(runs_dir: Path) -> Path:
    """A run folder holding the recorded run, as the engine would have written it."""
    run_dir = runs_dir / RUN_NAME
    run_dir.mkdir(parents=True)
    config = RunConfig.from_mapping(dict(dataset="shapes", arch="basic_cnn", epochs=EPOCHS, runs_dir=str(runs_dir)))
    (run_dir / "config.toml").write_text(config.to_toml())
    runs.write_status(run_dir, "finished")
    lines = [to_row(event) for event in recorded_events(run_dir)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


