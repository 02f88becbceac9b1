"""The training engine end to end on the generated shapes set, on the CPU."""

from __future__ import annotations

import json
import threading

import pytest
import torch
import torch.nn as nn

from workbench.core import runs
from workbench.core.events import (
    CheckpointSaved,
    EpochMetrics,
    Failed,
    Finished,
    ImagesSaved,
    RunStarted,
    StepMetrics,
)
from workbench.core.training.batches import DeviceBatches
from workbench.core.training.control import TrainControl
from workbench.core.training.engine import fit
from workbench.core.training.loop import evaluate


def test_two_epochs_write_a_complete_run(tiny, recorder):
    run_dir = fit(tiny(epochs=2, batch_size=256), recorder)
    assert recorder.of(Failed) == []
    started = recorder.of(RunStarted)[0]
    assert started.params == 62_958 and started.device == "cpu"
    epochs = recorder.of(EpochMetrics)
    assert [e.epoch for e in epochs] == [1, 2]
    assert epochs[-1].test_acc > 0.3  # 10 classes: chance is 0.1
    assert recorder.last(Finished).status == "finished"
    assert recorder.of(CheckpointSaved) and recorder.of(ImagesSaved)

    assert runs.read_status(run_dir)[0] == "finished"
    assert (run_dir / "config.toml").is_file()
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} >= {"last.pt", "best.pt"}
    records = runs.read_metrics(run_dir)
    epoch_lines = runs.epoch_records(records)
    assert len(epoch_lines) == 2 and set(epoch_lines[0]["per_class_acc"]) == set(started.classes)
    info = json.loads((run_dir / "run.json").read_text())
    assert len(info["mean"]) == 3 and info["classes"] == list(started.classes)
    images = {p.name for p in (run_dir / "images").glob("*.png")}
    assert {"augmented_epoch001.png", "predictions_epoch002.png", "confusion.png", "top_losses.png"} <= images


def test_step_samples_are_throttled(tiny, recorder):
    fit(tiny(epochs=1, batch_size=16, arch="linear"), recorder)
    steps = recorder.of(StepMetrics)
    elapsed = recorder.last(Finished).elapsed_s
    assert len(steps) <= elapsed / 0.3 + 2  # a few a second, never one per step (625 steps)


class TinyBnDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 10),
        )

    def forward(self, x):
        return self.body(x)


def test_evaluation_is_in_eval_mode_and_repeatable():
    torch.manual_seed(0)
    model = TinyBnDropout().train()
    images = torch.randint(0, 256, (300, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 10, (300,))
    batches = DeviceBatches(images, labels, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), 64, shuffle=False)
    first = evaluate(model, batches, 10)
    second = evaluate(model, batches, 10)
    assert (first.loss, first.acc) == (second.loss, second.acc)
    assert torch.equal(first.probs, second.probs)
    assert model.training  # the caller's mode comes back
    running_mean = model.body[1].running_mean.clone()
    evaluate(model, batches, 10)
    assert torch.equal(model.body[1].running_mean, running_mean)  # BN statistics untouched


def test_stop_finishes_the_step_and_saves(tiny, recorder):
    control = TrainControl()

    def sink(event):
        recorder(event)
        if isinstance(event, StepMetrics):
            control.stop()

    run_dir = fit(tiny(epochs=3, batch_size=16), sink, control)
    assert recorder.last(Finished).status == "stopped"
    assert runs.read_status(run_dir)[0] == "stopped"
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_pause_blocks_until_resumed(tiny, recorder):
    control = TrainControl()
    paused_at = []

    def sink(event):
        recorder(event)
        if isinstance(event, StepMetrics) and not paused_at:
            control.pause()
            paused_at.append(event.global_step)
            threading.Timer(0.5, control.resume).start()

    fit(tiny(epochs=1, batch_size=32, arch="linear"), sink, control)
    assert recorder.last(Finished).status == "finished"
    assert paused_at


def test_non_finite_loss_stops_with_the_step_and_keeps_no_bad_weights(tiny, recorder):
    run_dir = fit(tiny(epochs=2, optimizer="sgd", lr=1e6, momentum=0.0, arch="linear"), recorder)
    failed = recorder.last(Failed)
    assert failed is not None and "NaN or infinite at step" in failed.reason
    assert not failed.bad_input
    assert runs.read_status(run_dir)[0] == "failed"
    assert not (run_dir / "checkpoints" / "last.pt").exists()


def test_missing_folder_fails_as_bad_input(tiny, recorder, tmp_path):
    folder = tmp_path / "empty_root"
    folder.mkdir()
    fit(tiny(dataset=str(folder)), recorder)
    failed = recorder.last(Failed)
    assert failed is not None and failed.bad_input and "class" in failed.reason


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle"])
def test_schedules_stay_positive_and_peak_at_lr(schedule):
    from workbench.core.training.optim import lr_factor

    factors = [lr_factor(schedule, step, 100) for step in range(100)]
    assert max(factors) == pytest.approx(1.0) and min(factors) > 0 or schedule == "cosine"
    assert all(0 <= f <= 1 for f in factors)
