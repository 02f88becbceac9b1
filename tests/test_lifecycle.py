"""One run lifecycle, without a UI: every event is a row and back, the view is a fold over the
rows, the engine writes its pauses and resumes as rows, and a folder is followed as it grows."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from pathlib import Path

from rich.console import Console

from tests.support.ui import tiny_config
from workbench.core import runs
from workbench.core.events import (
    ROW_TYPES,
    CheckpointSaved,
    EpochMetrics,
    Evaluating,
    Failed,
    Finished,
    ImagesSaved,
    Notice,
    PhaseChanged,
    RunStarted,
    StatusChanged,
    StepMetrics,
    from_row,
    to_row,
)
from workbench.core.lifecycle.follow import RunFollower
from workbench.core.lifecycle.view import RunView
from workbench.core.training.control import TrainControl
from workbench.core.training.engine import fit


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def one_of_each(run_dir: Path) -> list:
    return [
        RunStarted(run_dir, "linear", 10, "cpu", "CPU", "shapes", ("a", "b"), 100, 20, 3, 4, start_epoch=1,
                   start_step=4, val_size=10, batch_size=32),
        StepMetrics(2, 1, 4, 5, 0.5, 0.75, 0.01, 100.0, 1.0, 2.0, gpu_memory_mb=None),
        EpochMetrics(2, 3, 8, 0.4, 0.8, 0.5, 0.7, None, None, 2, 0.7, 0.01, 100.0, 1.0, 2.0, 1.0,
                     per_class_acc={"a": 0.6}, per_class_split="val", extra={"val_acc_one_view": 0.69}),
        CheckpointSaved(run_dir / "checkpoints" / "last.pt", 2, best=True),
        ImagesSaved((run_dir / "images" / "confusion.png",)),
        Notice("something to know", "warning"),
        StatusChanged("paused", "asked through the control file"),
        PhaseChanged(2, "every layer (the backbone at 0.1 x the learning rate, frozen BatchNorm statistics)"),
        Evaluating("test", 512, 2000),
        Finished(run_dir, "stopped", 2, 3.0, steps_done=8, reason="SIGTERM"),
        Failed(run_dir, "the disk is full", bad_input=True, field="runs_dir"),
    ]


def test_every_event_is_a_row_and_back(tmp_path):
    events = one_of_each(tmp_path)
    assert {type(event) for event in events} == set(ROW_TYPES)  # a new event type needs a row
    for event in events:
        row = json.loads(json.dumps(to_row(event)))  # through the file's own encoding
        assert from_row(row) == event
    assert from_row({"type": "nonsense"}) is None and from_row({"type": "step", "epoch": "x", "nope": 1}) is None


def test_the_view_keeps_the_recipes_phase_and_the_status_strip_shows_it(tmp_path):
    from workbench.core.lifecycle.view import RunView
    from workbench.ui.widgets.status import TrainStatus

    view = RunView()
    for event in one_of_each(tmp_path)[:1]:
        view.apply(event)
    view.apply(PhaseChanged(1, "head only (epoch 1; the backbone is frozen)"))
    assert view.training_phase.startswith("head only")
    strip = TrainStatus()
    strip.show(view)
    assert "head only" in strip.render().plain and "backbone is frozen" not in strip.render().plain


def test_a_row_read_from_a_moved_folder_names_the_folder_it_is_in(tmp_path):
    row = to_row(Finished(Path("/elsewhere/run"), "finished", 1, 1.0))
    assert from_row(row, tmp_path).run_dir == tmp_path


def test_the_view_is_the_same_fold_whether_rows_or_events_arrive(recorded_run):
    rows = rows_of(recorded_run)
    from_rows = RunView.of(from_row(row) for row in rows)
    again = RunView.of(from_row(json.loads(json.dumps(row))) for row in rows)
    assert dataclasses.asdict(from_rows) == dataclasses.asdict(again)
    assert from_rows.phase == "finished" and from_rows.epochs == 3 and from_rows.best[1] in (1, 2, 3)
    assert from_rows.lr_curve.ys[-1] == [r for r in rows if r["type"] == "step"][-1]["lr"]  # the lr ends where the run did
    assert max(from_rows.loss["steps"].xs) <= 3 and min(from_rows.loss["steps"].xs) > 0  # x in epochs, not 0..1


def test_the_view_follows_pauses_stops_resumes_and_interruptions(tmp_path):
    events = one_of_each(tmp_path)
    view = RunView()
    view.apply(events[0])
    assert view.phase == "training" and view.epoch == 2
    view.apply(StatusChanged("paused", "asked through the control file"))
    assert view.phase == "paused" and "control file" in view.reason
    view.apply(StatusChanged("running"))
    assert view.phase == "training" and view.reason == ""
    view.apply(Finished(tmp_path, "stopped", 1, 1.0, steps_done=6))
    assert view.phase == "stopped" and not view.active
    view.apply(events[0])  # a resume from another process
    assert view.phase == "training" and view.sessions == 2 and view.outcome is None
    view.apply(StatusChanged("interrupted", "nobody trains it"))
    assert view.phase == "interrupted" and not view.active


def test_a_resume_cuts_the_curves_at_its_checkpoint(tmp_path):
    view = RunView()
    for step in range(1, 9):
        view.apply(StepMetrics(1 + (step - 1) // 4, (step - 1) % 4 + 1, 4, step, 1.0, 0.5, 0.1, 1.0, 1.0, 1.0))
    assert len(view.loss["steps"].xs) == 8
    view.apply(RunStarted(tmp_path, "linear", 1, "cpu", "CPU", "shapes", ("a",), 1, 1, 4, 4, start_epoch=1,
                          start_step=5))
    assert view.loss["steps"].steps == [1, 2, 3, 4, 5] and view.lr_curve.steps[-1] == 5


def test_the_engine_writes_every_event_as_a_row_and_says_when_it_pauses(tiny, recorder):
    control = TrainControl()
    paused_at = []

    def pause_once(event):
        recorder(event)
        if isinstance(event, StepMetrics) and not paused_at:
            paused_at.append(event.global_step)
            control.pause()
            threading.Timer(1.0, control.resume).start()

    run_dir = fit(tiny(arch="linear", epochs=2, image_size=12, batch_size=64), pause_once, control)
    rows = runs.read_metrics(run_dir)
    kinds = [row["type"] for row in rows]
    assert kinds.index("start") < kinds.index("step") and kinds[-1] == "end" and "notice" in kinds
    assert [from_row(row, run_dir) for row in rows] == [e for e in recorder.events if not isinstance(e, Finished)] + [
        recorder.last(Finished)]  # the file holds exactly what the app was told, in the same order
    statuses = [(row["status"], row["at_step"]) for row in rows if row["type"] == "status"]
    assert [s for s, _ in statuses] == ["paused", "running"]
    paused, going_on = [i for i, row in enumerate(rows) if row["type"] == "status"]
    assert all(row["type"] != "step" for row in rows[paused + 1:going_on])  # nothing trained while paused
    assert statuses[0][1] >= paused_at[0]


def test_a_headless_trainer_says_it_is_paused_and_stops_its_clock():
    from workbench.headless import HeadlessReporter, clock

    out = io.StringIO()
    reporter = HeadlessReporter(Console(file=out, width=200), interactive=False)
    reporter(StatusChanged("paused", "asked through the run's control file"))
    reporter(StatusChanged("running"))
    text = out.getvalue()
    assert "paused: asked through the run's control file. The clock stops" in text and "echo run >" in text
    assert "going on" in text
    assert clock(3725) == "1:02:05" and clock(None) == "-"


def test_the_follower_replays_a_run_that_was_rewritten_by_a_resume(tmp_path, recorded_run):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = rows_of(recorded_run)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    follower = RunFollower(run_dir)
    first, restarted = follower.poll()
    assert len(first) == len(rows) and not restarted
    runs.write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows[:10]))  # a repair
    again, restarted = follower.poll()
    assert restarted and len(again) == 10


def test_a_damaged_row_is_skipped_alone(recorded_run):
    for damaged in ({"type": "step", "epoch": 1, "step": 3}, {"type": "notice", "message": None, "level": "info"},
                    {"type": "end", "status": "finished", "epochs_done": 1, "elapsed_s": "x"}, {"type": "start"},
                    {"type": "checkpoint", "path": None, "epoch": 1, "best": False},
                    {"type": "epoch", "epoch": 1, "per_class_acc": {"a": "high"}}):
        assert from_row(damaged, Path("run")) is None, damaged
    rows = rows_of(recorded_run)
    damaged = rows[:5] + [{"type": "step", "epoch": 1, "step": 3}, {"type": "start"}] + rows[5:]
    view = RunView.of(event for row in damaged if (event := from_row(row, Path("run"))) is not None)
    assert dataclasses.asdict(view) == dataclasses.asdict(RunView.of(from_row(row, Path("run")) for row in rows))


def test_a_child_s_usage_error_names_its_field(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "workbench", "train", "--json-lines", "--epochs", "abc"],
                          capture_output=True, text=True, cwd=tmp_path)
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 2 and row["type"] == "error" and row["field"] == "epochs" and "Traceback" not in done.stderr


def test_epoch_rows_from_a_run_replay_as_the_events_they_were(tmp_path, data_dir):
    from workbench.core.events import from_row

    recorded = []
    run_dir = fit(tiny_config(tmp_path, data_dir, epochs=1), recorded.append)
    (row,) = runs.epoch_records(runs.read_metrics(run_dir))
    (event,) = [e for e in recorded if isinstance(e, EpochMetrics)]
    assert from_row(row) == event


def test_the_epoch_line_names_weak_classes_only_when_they_are_weaker_than_the_best():
    from workbench.ui.log_lines import log_line

    def line(per_class):
        return log_line(EpochMetrics(2, 3, 8, 0.4, 0.8, 0.5, 0.7, None, None, 2, 0.7, 0.01, 100.0, 1.0, 2.0, 1.0,
                                     per_class_acc=per_class, per_class_split="val"))

    assert "weakest" not in line({"cat": 1.0, "dog": 1.0})  # nobody is weakest when all are as good
    mixed = line({"ant": 0.5, "bee": 0.9, "cow": 0.9})
    assert "weakest: ant 50%" in mixed and "bee" not in mixed
    assert "weakest: ant 20%, bee 60%" in line({"ant": 0.2, "bee": 0.6, "cow": 0.9, "doe": 0.95})
