"""The training engine end to end on the generated shapes set, on the CPU."""

from __future__ import annotations

import json
import math
import threading
import types

import pytest
import torch
import torch.nn as nn

from tests.support.events import Recorder, SkewedClock
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.events import (
    CheckpointSaved,
    EpochMetrics,
    Failed,
    Finished,
    ImagesSaved,
    Notice,
    RunStarted,
    StatusChanged,
    StepMetrics,
)
from workbench.core.training.batches import Batch, DeviceBatches
from workbench.core.training.control import TrainControl
from workbench.core.training.engine import fit
from workbench.core.training.loop import evaluate, train_one_epoch
from workbench.core.training.parts import TrainingParts


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
    # The log says where inside the first epoch it stopped, not "epoch 0".
    from workbench.ui.log_lines import log_line

    saved = recorder.last(CheckpointSaved)
    assert saved.epoch == 0 and saved.epoch_step >= recorder.of(StepMetrics)[0].step > 0
    assert f"saved (in epoch 1, after step {saved.epoch_step})" in log_line(saved)


def test_pause_blocks_until_resumed(tiny, recorder):
    control = TrainControl()
    resumed_at = []  # how many events had arrived when the pause ended

    def resume():
        resumed_at.append(len(recorder.events))
        control.resume()

    def sink(event):
        recorder(event)
        if isinstance(event, StepMetrics) and not control.paused and not resumed_at:
            control.pause()
            threading.Timer(0.5, resume).start()

    fit(tiny(epochs=1, batch_size=16, arch="linear"), sink, control)
    assert recorder.last(Finished).status == "finished"
    (paused_event,) = [e for e in recorder.of(StatusChanged) if e.status == "paused"]
    paused_index = recorder.events.index(paused_event)
    held = recorder.events[paused_index : resumed_at[0]]
    assert not [e for e in held if isinstance(e, (StepMetrics, EpochMetrics))]  # nothing trained while paused
    assert [e for e in recorder.events[resumed_at[0]:] if isinstance(e, StepMetrics)]  # and training went on


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
    assert max(factors) == pytest.approx(1.0) and min(factors) > 0
    assert all(0 < f <= 1 for f in factors)
    peak = factors.index(max(factors))
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1:]))  # never rises after its peak
    halfway = {"constant": 1.0, "step": 0.1, "cosine": 0.5, "onecycle": 1 - 25 / 75 * (1 - 1e-3)}[schedule]
    assert factors[50] == pytest.approx(halfway, rel=1e-3)
    assert peak == (24 if schedule == "onecycle" else 0)  # onecycle warms up over a quarter


def test_a_failure_reason_carries_no_prefix_of_its_own(tiny):
    recorder = Recorder()
    fit(tiny(epochs=2, optimizer="sgd", lr=1e6, momentum=0.0, arch="linear"), recorder)
    reason = recorder.last(Failed).reason
    assert not reason.lower().startswith("training failed")  # the UI adds "training failed:" once


def test_best_epoch_is_chosen_on_validation_and_test_is_evaluated_at_the_end(tiny):
    recorder = Recorder()
    run_dir = fit(tiny(epochs=3, arch="linear"), recorder)
    epochs = recorder.of(EpochMetrics)
    assert all(e.val_acc is not None for e in epochs)
    assert [e.test_acc is not None for e in epochs] == [False, False, True]  # test once, after the last epoch
    best = max(epochs, key=lambda e: e.val_acc)
    assert epochs[-1].best_epoch == best.epoch and epochs[-1].best_val_acc == best.val_acc
    saved = ckpt.load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert saved["progress"]["epoch"] == best.epoch
    finished = recorder.last(Finished)
    assert finished.best_epoch == best.epoch and finished.best_test_acc is not None
    assert "by validation" in finished.summary() and "test" in finished.summary()
    assert recorder.of(Notice) and not any("no validation split" in n.message for n in recorder.of(Notice))


def test_without_a_validation_split_no_selection_is_made_and_export_says_so(tiny):
    from workbench.core.export.bundle import export_run

    recorder = Recorder()
    run_dir = fit(tiny(epochs=2, arch="linear", val_fraction=0), recorder)
    assert any("no epoch is selected as the best" in n.message for n in recorder.of(Notice))
    assert all(e.test_acc is not None and e.val_acc is None and e.best_epoch is None for e in recorder.of(EpochMetrics))
    assert not (run_dir / "checkpoints" / "best.pt").exists()
    export_run(run_dir)
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    assert meta["epoch"] == 2 and "selected no best epoch" in meta["chosen_by"]


def test_time_spent_paused_is_in_no_reported_time(tiny, monkeypatch):
    clock = SkewedClock(monkeypatch)  # the pause lasts an hour by the clock the engine reads
    control = TrainControl()
    paused = []

    def resume():
        clock.jump()
        control.resume()

    def sink(event):
        recorder(event)
        if isinstance(event, StepMetrics) and not paused:
            paused.append(event.global_step)
            control.pause()
            threading.Timer(0.2, resume).start()

    recorder = Recorder()
    fit(tiny(epochs=1, arch="linear", batch_size=16), sink, control)
    finished = recorder.last(Finished)
    (epoch,) = recorder.of(EpochMetrics)
    assert paused and finished.status == "finished"
    hour = clock.jump_s
    assert finished.elapsed_s < hour and epoch.epoch_s < hour and epoch.elapsed_s < hour
    steps = recorder.of(StepMetrics)
    assert all(later.elapsed_s - earlier.elapsed_s < hour for earlier, later in zip(steps, steps[1:]))  # no jump
    # No sample's speed includes the pause: its images over its speed is its own duration.
    starts = [0] + [s.global_step for s in steps[:-1]]
    durations = [(s.global_step - start) * 16 / s.images_per_s for s, start in zip(steps, starts)]
    assert max(durations) < hour, durations


def test_a_run_stopped_before_its_first_evaluation_says_no_evaluation_happened(tiny, capsys):
    control = TrainControl()

    def sink(event):
        recorder(event)
        if isinstance(event, StepMetrics):
            control.stop()

    recorder = Recorder()
    fit(tiny(epochs=2, batch_size=16), sink, control)
    finished = recorder.last(Finished)
    assert not finished.evaluated and "no evaluation happened" in finished.summary()
    assert "0.0%" not in finished.summary()


class RecordingSGD(torch.optim.SGD):
    """SGD that notes the total gradient norm each step is taken on."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.norms = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return super().step(closure)


class FewBatches:
    device = torch.device("cpu")

    def __init__(self, steps=3):
        generator = torch.Generator().manual_seed(0)
        self.items = [Batch(torch.randn(16, 3, 8, 8, generator=generator) * 100,
                            torch.randint(0, 10, (16,), generator=generator), torch.arange(16))
                      for _ in range(steps)]

    def __len__(self):
        return len(self.items)

    def batches(self, order, start_step=0, epoch=1):
        yield from self.items[start_step:]


class Tally:
    global_step = epoch_step = 0

    def add(self, loss, logits, labels):
        self.global_step += 1
        self.epoch_step += 1


def one_epoch(limit: float, scaled: bool) -> list[float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    optimizer = RecordingSGD(model.parameters(), lr=0.1)
    parts = TrainingParts(
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        scaler=torch.amp.GradScaler("cpu", enabled=scaled),
        criterion=nn.CrossEntropyLoss(),
        clip_grad_norm=limit,
    )
    control = types.SimpleNamespace(wait_while_paused=lambda: None, stop_requested=False)
    train_one_epoch(model, FewBatches(), torch.arange(48), parts, control, Tally(), epoch=1)
    return optimizer.norms


@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "grad-scaler"])
def test_steps_take_gradients_clipped_to_the_limit(scaled):
    unclipped = one_epoch(0.0, scaled)
    clipped = one_epoch(0.5, scaled)
    assert min(unclipped) > 0.5  # the limit is below what these batches give, so it acts
    # Exactly at the limit, not far below: a scaler's gradients clipped before unscaling would end
    # up 65,536 times smaller than the limit once the scaler's step unscales them.
    assert clipped and all(0.5 * (1 - 1e-4) <= norm <= 0.5 * (1 + 1e-4) for norm in clipped)


def test_a_huge_learning_rate_with_clipping_stays_finite(tiny, recorder):
    from workbench.core.events import EpochMetrics, Failed, Finished
    from workbench.core.training.engine import fit

    fit(tiny(optimizer="sgd", lr=1000.0, momentum=0.0, schedule="constant", clip_grad_norm=1e-4), recorder)
    assert not recorder.of(Failed) and recorder.of(Finished)
    epochs = recorder.of(EpochMetrics)
    assert epochs and all(math.isfinite(row.train_loss) for row in epochs)


# ---- every training image in every epoch (issue: the last partial batch was dropped) -------------


@pytest.mark.parametrize("count, batch, spans", [
    (220, 128, [(0, 128), (128, 220)]),  # the remainder is a batch of its own
    (129, 128, [(0, 129)]),  # a single leftover image rides with the batch before it (BatchNorm needs 2)
    (256, 128, [(0, 128), (128, 256)]),
    (92, 128, [(0, 92)]),  # a split smaller than a batch: one step of all of it
])
def test_an_epoch_takes_every_training_image_once(count, batch, spans):
    images = torch.zeros(count, 3, 4, 4, dtype=torch.uint8)
    batches = DeviceBatches(images, torch.zeros(count, dtype=torch.int64), (0.5,) * 3, (0.25,) * 3,
                            torch.device("cpu"), batch, shuffle=True)
    assert [batches.step_span(step) for step in range(len(batches))] == spans
    order = batches.epoch_order()
    seen = torch.cat([b.positions for b in batches.batches(order)])
    assert sorted(seen.tolist()) == list(range(count))
    assert ("more than the 92 training images" in batches.split_note()) == (count < batch)


def test_a_folder_of_220_images_at_batch_128_trains_on_all_of_them_each_epoch(tmp_path):
    from tests.support.folders import folder_config, image_folder

    dataset = image_folder(tmp_path / "animals", classes=("ant", "bee"), per_class=110, size=8)
    events = Recorder()
    run_dir = fit(folder_config(tmp_path, dataset, batch_size=128, epochs=2, val_fraction=0), events)
    started = events.last(RunStarted)
    assert started.train_size == 220 and started.steps_per_epoch == 2
    epochs = runs.epoch_records(runs.read_metrics(run_dir))
    assert [row["global_step"] for row in epochs] == [2, 4]
    assert runs.read_run_info(run_dir)["left_out_per_epoch"] == 0
