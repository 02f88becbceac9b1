"""Checkpoints and resume: nothing trained is lost, and a resumed run equals a straight one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
import threading

import pytest
import torch
from PIL import Image

from tests.support.cli import REPO, one_line_error
from tests.support.events import Recorder, wait_for
from tests.support.folders import folder_config, image_folder, snapshot
from workbench.cli import main
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.events import EpochMetrics, Failed, Finished, Notice, StepMetrics
from workbench.core.training import run_folder
from workbench.core.training.control import TrainControl
from workbench.core.training.engine import fit


def final_weights(run_dir):
    return ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def small(tiny, **changes):
    # Small images keep four epochs of a conv net with BatchNorm within seconds on a CPU.
    values = dict(arch="convbn", batch_size=256, augment="crop,flip", schedule="constant", seed=3, image_size=12)
    values.update(changes)
    return tiny(**values)


def test_two_plus_two_epochs_equal_four(tiny, recorder):
    straight = fit(small(tiny, epochs=4), recorder)
    first = fit(small(tiny, epochs=2), recorder)
    resumed = fit(small(tiny, epochs=4), recorder, resume_dir=first)
    assert resumed == first
    assert_same_weights(final_weights(straight), final_weights(resumed))
    a = ckpt.load_checkpoint(straight / "checkpoints" / "last.pt")["progress"]
    b = ckpt.load_checkpoint(resumed / "checkpoints" / "last.pt")["progress"]
    # 9,000 training images (shapes' 10,000 less the 10% validation split): 35 batches of 256 and one of 40.
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (4, 4 * 36)
    epochs = [r["epoch"] for r in runs.epoch_records(runs.read_metrics(resumed))]
    assert epochs == [1, 2, 3, 4]
    assert runs.read_status(resumed)[0] == "finished"


def test_stop_mid_epoch_then_resume_equals_straight_run(tiny, recorder):
    """A cosine schedule and a stop in the middle of epoch 2: the resume picks up that exact step."""
    config = small(tiny, epochs=3, schedule="cosine")
    straight = fit(config, recorder)

    control = TrainControl()

    def stop_in_epoch_two(event):
        if isinstance(event, StepMetrics) and event.epoch == 2:
            control.stop()

    stopped = fit(config, stop_in_epoch_two, control)
    state = ckpt.load_checkpoint(stopped / "checkpoints" / "last.pt")["progress"]
    assert state["epoch"] == 1 and state["epoch_step"] > 0
    fit(config, recorder, resume_dir=stopped)
    assert_same_weights(final_weights(straight), final_weights(stopped))


def test_resume_of_a_finished_run_needs_more_epochs(tiny, recorder):
    run_dir = fit(small(tiny, epochs=1, arch="linear"), recorder)
    fit(small(tiny, epochs=1, arch="linear"), recorder, resume_dir=run_dir)
    failed = recorder.last(Failed)
    assert failed is not None and "--epochs" in failed.reason and failed.bad_input
    assert (run_dir / "checkpoints" / "last.pt").exists()


def test_truncated_checkpoint_falls_back_to_the_previous_one(tiny, recorder):
    run_dir = fit(small(tiny, epochs=2, arch="linear"), recorder)
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    recorder.events.clear()
    fit(small(tiny, epochs=3, arch="linear"), recorder, resume_dir=run_dir)
    notices = " ".join(n.message for n in recorder.of(Notice))
    assert "damaged or truncated" in notices and "last.prev.pt" in notices
    assert [e.epoch for e in recorder.of(EpochMetrics)] == [2, 3]  # redid epoch 2 from epoch 1
    assert recorder.last(Finished).status == "finished"


def test_checkpoint_with_a_payload_is_refused_and_never_runs(tiny, recorder, tmp_path):
    run_dir = fit(small(tiny, epochs=1, arch="linear"), recorder)
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    state["model"]["evil"] = Payload()
    torch.save(state, run_dir / "checkpoints" / "last.pt")
    recorder.events.clear()
    fit(small(tiny, epochs=2, arch="linear"), recorder, resume_dir=run_dir)
    failed = recorder.last(Failed)
    assert failed is not None and "refusing to load" in failed.reason
    assert not marker.exists()
    with pytest.raises(Exception, match="refusing"):
        ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert not marker.exists()


KILL_DURING_SAVE = textwrap.dedent(
    """
    import sys, time, torch
    from pathlib import Path
    from workbench.core import checkpoint as ckpt
    folder = Path(sys.argv[1])
    ckpt.save_last({"model": {"w": torch.ones(3)}, "tag": "good"}, folder)
    real_save = torch.save
    def slow_save(obj, handle):
        handle.write(b"PK half a zip file")
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
    torch.save = slow_save
    ckpt.save_last({"model": {"w": torch.zeros(3)}, "tag": "new"}, folder)
    """
)


def test_kill_during_save_keeps_a_loadable_checkpoint(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    leftovers = list(tmp_path.glob(".*.tmp"))
    assert leftovers, "the killed save should have left its temp file"
    state, path, problems = ckpt.load_latest(tmp_path)
    assert state["tag"] == "good"
    assert ckpt.clean_temp_files(tmp_path) == leftovers
    assert not list(tmp_path.glob(".*.tmp"))


def test_non_finite_weights_never_overwrite_checkpoints(tiny, recorder, monkeypatch):
    config = small(tiny, epochs=1, arch="linear", optimizer="sgd", lr=0.01, momentum=0.0)
    run_dir = fit(config, recorder)
    before = final_weights(run_dir)
    recorder.events.clear()
    # The weights explode in epoch 2, as with an absurd learning rate (which a resume may not change).
    step = torch.optim.SGD.step

    def exploding_step(self, closure=None):
        result = step(self, closure)
        with torch.no_grad():
            for group in self.param_groups:
                for param in group["params"]:
                    param.mul_(1e30)
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", exploding_step)
    fit(config.replace(epochs=3), recorder, resume_dir=run_dir)
    failed = recorder.last(Failed)
    assert failed is not None and "NaN or infinite" in failed.reason
    assert_same_weights(before, final_weights(run_dir))
    assert runs.read_status(run_dir)[0] == "failed"


def test_resume_with_another_optimizer_is_refused_clearly(tiny, recorder):
    config = small(tiny, epochs=1, arch="linear")
    run_dir = fit(config, recorder)
    fit(config.replace(epochs=2, optimizer="sgd"), recorder, resume_dir=run_dir)
    failed = recorder.last(Failed)
    assert failed.bad_input and "optimizer" in failed.reason


def test_out_of_memory_halves_the_batch_and_goes_on(tiny, recorder, monkeypatch):
    from workbench.core.models.seed import nn

    original = nn.Linear.forward

    def forward(self, x):
        if x.shape[0] > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, x)

    monkeypatch.setattr(nn.Linear, "forward", forward)
    fit(tiny(arch="linear", epochs=1, batch_size=256), recorder)
    notices = [n.message for n in recorder.of(Notice) if "out of GPU memory" in n.message]
    assert len(notices) == 2 and "retrying the epoch with 64" in notices[-1]
    assert recorder.last(Finished).status == "finished"


def test_out_of_memory_at_the_floor_stops_with_advice(tiny, recorder, monkeypatch):
    from workbench.core.models.seed import nn

    def forward(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(nn.Linear, "forward", forward)
    fit(tiny(arch="linear", epochs=1, batch_size=32), recorder)
    failed = recorder.last(Failed)
    assert failed is not None and "ran out of memory" in failed.reason and "smaller" in failed.reason


# ---- a hand-edited config.toml ---------------------------------------------------------------


def edited_resume(tiny, recorder, line_from: str, line_to: str):
    """Train one epoch, edit one line of config.toml by hand, resume for two as the app and CLI
    do (config.toml read back, --epochs 2); returns (run folder, its files before, config.toml text)."""
    from workbench.core.config import RunConfig

    run_dir = fit(small(tiny, epochs=1, arch="linear"), recorder)
    path = run_dir / "config.toml"
    text = path.read_text(encoding="utf-8")
    assert line_from in text
    path.write_text(text.replace(line_from, line_to), encoding="utf-8")
    edited = path.read_bytes()
    before = {file: file.read_bytes() for file in run_dir.rglob("*") if file.is_file() and file.name != ".lock"}
    config = runs.read_config(run_dir, for_resume=True)
    assert isinstance(config, RunConfig)
    fit(config.replace(epochs=2), recorder, resume_dir=run_dir)
    after = {file: file.read_bytes() for file in run_dir.rglob("*") if file.is_file() and file.name != ".lock"}
    return run_dir, before, after, edited


@pytest.mark.parametrize(
    "setting, line_from, line_to, values",
    [
        ("lr", "lr = 0.003", "lr = 0.03", ("0.003", "0.03")),
        ("augment", '"crop",', '"rotate",', ("crop", "rotate")),
    ],
)
def test_resume_refuses_changed_training_settings(tiny, recorder, setting, line_from, line_to, values):
    run_dir, before, after, edited = edited_resume(tiny, recorder, line_from, line_to)
    failed = recorder.last(Failed)
    assert failed is not None and failed.bad_input, failed
    reason = failed.reason
    assert reason.startswith("--" + setting.replace("_", "-")) and "\n" not in reason
    assert all(value in reason for value in values) and "config.toml" in reason
    assert after == before and (run_dir / "config.toml").read_bytes() == edited  # nothing written


def test_resume_refuses_changed_image_size(tiny, recorder):
    run_dir, before, after, _ = edited_resume(tiny, recorder, "image_size = 12", "image_size = 16")
    assert "12" in recorder.last(Failed).reason and "16" in recorder.last(Failed).reason and after == before


def test_resume_refuses_changed_val_fraction(tiny, recorder):
    run_dir, before, after, _ = edited_resume(tiny, recorder, "val_fraction = 0.1", "val_fraction = 0.3")
    assert recorder.last(Failed).reason.startswith("--val-fraction") and after == before


def test_resume_refuses_changed_seed(tiny, recorder):
    run_dir, before, after, _ = edited_resume(tiny, recorder, "seed = 3", "seed = 9")
    assert recorder.last(Failed).reason.startswith("--seed") and after == before


def test_resume_refuses_a_changed_setting_passed_in_directly(tiny, recorder):
    """A caller that hands fit() another config than config.toml's is refused the same way."""
    config = small(tiny, epochs=1, arch="linear")
    run_dir = fit(config, recorder)
    fit(config.replace(epochs=2, seed=11), recorder, resume_dir=run_dir)
    failed = recorder.last(Failed)
    assert failed.bad_input and failed.reason.startswith("--seed") and "11" in failed.reason


def test_resume_may_change_what_the_declarations_allow(tiny, recorder):
    """keep_best, early_stop and the device are how the run goes on, not what it trains."""
    run_dir, _, _, _ = edited_resume(tiny, recorder, "keep_best = 1", "keep_best = 2")
    assert recorder.last(Failed) is None and recorder.last(Finished) is not None
    assert runs.read_config(run_dir).keep_best == 2 and runs.read_config(run_dir).epochs == 2


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from workbench.core.runs import RunLock
    lock = RunLock(Path(sys.argv[1]))
    lock.acquire()
    lock.record_owner()
    print("holding", flush=True)
    time.sleep(60)
    """
)


def test_a_run_another_process_trains_cannot_be_resumed(finished_run, tmp_path, capsys):
    run_dir, dataset = finished_run
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = snapshot(run_dir)
        recorder = Recorder()
        fit(folder_config(tmp_path, dataset, epochs=2), recorder, resume_dir=run_dir)
        failed = recorder.last(Failed)
        assert failed.bad_input and f"process {holder.pid}" in failed.reason and "being trained" in failed.reason
        line = one_line_error(capsys, ["train", "--resume", str(run_dir), "--epochs", "3"])
        assert f"process {holder.pid}" in line
        assert snapshot(run_dir) == before
        assert not runs.is_interrupted(run_dir)
    finally:
        holder.kill()
        holder.wait()
    # The OS dropped the lock with its holder: nothing stale is left to decide anything.
    fit(folder_config(tmp_path, dataset, epochs=2), lambda event: None, resume_dir=run_dir)
    assert runs.read_status(run_dir)[0] == "finished"


def test_resuming_a_run_this_process_is_training_is_refused_before_its_first_checkpoint(tmp_path):
    dataset = image_folder(tmp_path / "animals", per_class=40)
    control, started, holder = TrainControl(), threading.Event(), {}

    def first_run():
        def sink(event):
            if isinstance(event, StepMetrics):
                started.set()
                control.wait_while_paused()

        holder["dir"] = fit(folder_config(tmp_path, dataset, epochs=3, batch_size=2), sink, control)

    control.pause()  # the live run stays in its first epoch: no checkpoint yet
    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        (run_dir,) = [p for p in (tmp_path / "runs").iterdir()] if wait_for(lambda: (tmp_path / "runs").is_dir() and any((tmp_path / "runs").iterdir())) else []
        # The trainer takes the lock, then names itself in .lock: until then the sentence can only
        # say "another process".
        named = run_dir / ".lock"
        assert wait_for(lambda: runs.is_locked(run_dir) and named.is_file() and f'"pid": {os.getpid()}' in named.read_text())
        recorder = Recorder()
        fit(folder_config(tmp_path, dataset, epochs=3), recorder, resume_dir=run_dir)
        assert f"being trained by process {os.getpid()}" in recorder.last(Failed).reason
        assert runs.read_status(run_dir)[0] == "running"  # the live run was not marked failed
    finally:
        control.stop()
        thread.join(60)
    assert runs.read_status(holder["dir"])[0] == "stopped"


def test_refused_resumes_leave_every_file_byte_identical(finished_run, tmp_path, capsys):
    run_dir, dataset = finished_run
    before = snapshot(run_dir)

    recorder = Recorder()  # the same --epochs as the finished run
    fit(folder_config(tmp_path, dataset), recorder, resume_dir=run_dir)
    assert recorder.last(Failed).field == "epochs"
    assert snapshot(run_dir) == before

    (dataset / "train" / "dog").mkdir()  # the data folder gained a class
    (dataset / "test" / "dog").mkdir()
    for split in ("train", "test"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(dataset / split / "dog" / "a.png")
    recorder = Recorder()
    fit(folder_config(tmp_path, dataset, epochs=2), recorder, resume_dir=run_dir)
    reason = recorder.last(Failed).reason
    assert "[ant, bee, cow]" in reason and "[ant, bee, cow, dog]" in reason
    assert snapshot(run_dir) == before
    for split in ("train", "test"):
        (dataset / split / "dog" / "a.png").unlink()
        (dataset / split / "dog").rmdir()

    config_file = run_dir / "config.toml"  # an emptied config.toml
    kept = config_file.read_bytes()
    config_file.write_text("")
    emptied = snapshot(run_dir)
    assert "lacks dataset, arch" in one_line_error(capsys, ["train", "--resume", str(run_dir), "--epochs", "2"])
    assert snapshot(run_dir) == emptied
    config_file.write_bytes(kept)

    class Payload:  # a checkpoint that would run code
        def __reduce__(self):
            return (os.system, ("true",))

    last = run_dir / "checkpoints" / "last.pt"
    good = last.read_bytes()
    state = ckpt.load_checkpoint(last)
    state["model"]["evil"] = Payload()
    torch.save(state, last)
    poisoned = snapshot(run_dir)
    recorder = Recorder()
    fit(folder_config(tmp_path, dataset, epochs=2), recorder, resume_dir=run_dir)
    assert "refusing to load" in recorder.last(Failed).reason
    assert snapshot(run_dir) == poisoned
    last.write_bytes(good)

    assert snapshot(run_dir) == before
    assert main(["export", str(run_dir)]) == 0  # the run is as good as it was


def test_renamed_or_reordered_class_folders_are_refused_listing_both(finished_run, tmp_path):
    run_dir, dataset = finished_run
    before = snapshot(run_dir)
    for split in ("train", "test"):  # ant <-> cow: same names, other labels
        (dataset / split / "ant").rename(dataset / split / "tmp")
        (dataset / split / "cow").rename(dataset / split / "ant")
        (dataset / split / "tmp").rename(dataset / split / "zebra")
    recorder = Recorder()
    fit(folder_config(tmp_path, dataset, epochs=2), recorder, resume_dir=run_dir)
    failed = recorder.last(Failed)
    assert failed.bad_input and "[ant, bee, cow]" in failed.reason and "[ant, bee, zebra]" in failed.reason
    assert snapshot(run_dir) == before


def test_a_torn_metrics_line_is_dropped_before_a_resume_appends(finished_run, tmp_path):
    run_dir, dataset = finished_run
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"type": "epoch", "epoch": 2, "train_lo')  # a crash mid-write
    fit(folder_config(tmp_path, dataset, epochs=2), lambda event: None, resume_dir=run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)  # every line reads
    summary = runs.summarize_run(run_dir)
    assert (summary.epochs_done, summary.epochs) == (2, 2)
    assert [r["epoch"] for r in runs.epoch_records(runs.read_metrics(run_dir))] == [1, 2]


def test_a_resume_takes_the_lock_before_it_reads_the_run(finished_run, tmp_path, monkeypatch):
    run_dir, dataset = finished_run
    seen = []
    real = run_folder.read_resume_point  # where fit()'s run folder reads a resume point

    def watched(path, epochs):
        seen.append(runs.is_locked(path))
        return real(path, epochs)

    monkeypatch.setattr(run_folder, "read_resume_point", watched)
    fit(folder_config(tmp_path, dataset, epochs=2), lambda event: None, resume_dir=run_dir)
    assert seen == [True]  # a second resume could not have read the same checkpoint meanwhile


def test_swapped_class_folders_and_changed_files_are_refused_on_resume(finished_run, tmp_path):
    run_dir, dataset = finished_run
    before = snapshot(run_dir)
    for split in ("train", "test"):  # same names, other images under each
        (dataset / split / "ant").rename(dataset / split / "tmp")
        (dataset / split / "bee").rename(dataset / split / "ant")
        (dataset / split / "tmp").rename(dataset / split / "bee")
    recorder = Recorder()
    fit(folder_config(tmp_path, dataset, epochs=2), recorder, resume_dir=run_dir)
    assert "[ant, bee] changed since this run started" in recorder.last(Failed).reason
    assert snapshot(run_dir) == before


def test_a_resume_keeps_a_better_best_checkpoint(tiny, monkeypatch):
    import torch

    run_dir = fit(tiny(arch="linear", epochs=1), lambda event: None)
    best = (run_dir / "checkpoints" / "best.pt").read_bytes()
    # Epoch 2 learns nothing: its steps are skipped (a resume may not change the lr, the run's own setting).
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    fit(tiny(arch="linear", epochs=2), lambda event: None, resume_dir=run_dir)
    rows = runs.epoch_records(runs.read_metrics(run_dir))
    if rows[1]["val_acc"] <= rows[0]["val_acc"]:
        assert (run_dir / "checkpoints" / "best.pt").read_bytes() == best
        assert ckpt.load_checkpoint(run_dir / "checkpoints" / "best.pt")["progress"]["epoch"] == 1


def test_resume_refuses_config_files_and_run_files_changed_by_hand(finished_run, tmp_path, capsys):
    run_dir, dataset = finished_run
    assert "do not apply" in one_line_error(capsys, ["train", "--resume", str(run_dir), "--config", "x.toml"])
    before = snapshot(run_dir)
    (run_dir / "metrics.jsonl").rename(tmp_path / "metrics.jsonl")
    (run_dir / "metrics.jsonl").mkdir()
    recorder = Recorder()
    fit(folder_config(tmp_path, dataset, epochs=2), recorder, resume_dir=run_dir)
    assert "is not a regular file" in recorder.last(Failed).reason
    (run_dir / "metrics.jsonl").rmdir()
    (tmp_path / "metrics.jsonl").rename(run_dir / "metrics.jsonl")
    assert snapshot(run_dir) == before and runs.read_status(run_dir)[0] == "finished"


@pytest.mark.parametrize("damage, words", [
    (lambda s: s["progress"].update(epoch=-1), "progress.epoch is -1, not a count"),
    (lambda s: s["progress"].update(epoch=float("nan")), "progress.epoch is nan"),
    (lambda s: s["progress"].update(epoch="1"), "progress.epoch is '1'"),
    (lambda s: s["progress"].update(global_step=-5), "progress.global_step is -5"),
    (lambda s: s["progress"].update(best_epoch="x"), "progress.best_epoch is 'x'"),
    (lambda s: s["progress"].update(best_val_acc=float("inf")), "progress.best_val_acc is inf"),
    (lambda s: s.update(batch_size=True), "batch_size is True"),
    (lambda s: s.update(batch_size=0), "batch_size is 0"),
    (lambda s: s.update(history="not a list"), "its history is not a list"),
    (lambda s: s["loader"].update(order=[1, 2]), "its loader state is not"),
])
def test_numbers_from_files_a_checkpoint_is_bounded_like_its_flags(finished_run, capsys, damage, words):
    run_dir, _ = finished_run
    folder = run_dir / "checkpoints"
    for path in folder.glob("*.pt"):  # every checkpoint, so none is left to fall back to
        state = torch.load(path, weights_only=True)
        damage(state)
        torch.save(state, path)
    config_before = (run_dir / "config.toml").read_bytes()
    error = one_line_error(capsys, ["train", "--resume", str(run_dir), "--epochs", "3"])
    assert "is damaged: " + words in error and "no usable checkpoint" in error
    assert (run_dir / "config.toml").read_bytes() == config_before
    assert "is damaged: " + words in one_line_error(capsys, ["export", str(run_dir)])


def test_files_read_back_a_relative_data_folder_is_recorded_whole(tmp_path, monkeypatch, recorder, capsys):
    from workbench.core.config import RunConfig

    image_folder(tmp_path / "start" / "tiny")
    monkeypatch.chdir(tmp_path / "start")
    config = RunConfig.from_mapping(dict(dataset="tiny", arch="linear", epochs=1, image_size=8, device="cpu",
                                         runs_dir="runs", augment="none", batch_size=8))
    run_dir = fit(config, recorder)
    assert runs.read_status(run_dir)[0] == "finished"
    saved = RunConfig.from_toml(run_dir / "config.toml")
    assert saved.dataset == str(tmp_path / "start" / "tiny")  # not "tiny": that is a folder only from here
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "tiny").mkdir(parents=True)  # a folder of the same name where the resume runs: not the data
    monkeypatch.chdir(elsewhere)
    # The same seed and augmentation as the run's are no change; --runs-dir finds a run by name only.
    assert main(["train", "--resume", str(run_dir), "--epochs", "2", "--seed", "0", "--augment", "none",
                 "--runs-dir", "nowhere"]) == 0
    assert runs.read_status(run_dir)[0] == "finished"
    assert Path(RunConfig.from_toml(run_dir / "config.toml").runs_dir).resolve() == run_dir.parent.resolve()
    assert not (elsewhere / "nowhere").exists()
    changed = one_line_error(capsys, ["train", "--resume", str(run_dir), "--epochs", "3", "--seed", "1"])
    assert "(got --seed)" in changed and "--preset" not in changed  # only flags a resume takes are named


def test_a_resume_to_more_epochs_steps_at_the_new_schedules_rate_from_its_first_step(tmp_path):
    """One step per epoch: a cosine run of 1 epoch ends at lr 0. Resumed to 2 epochs, its first step
    must use the new schedule's rate (half the peak), not the old schedule's last 0."""
    dataset = image_folder(tmp_path / "animals")
    config = folder_config(tmp_path, dataset, arch="basic_cnn", image_size=16, batch_size=64, schedule="cosine",
                           optimizer="adamw", weight_decay=0.0)
    run_dir = fit(config, lambda event: None)
    before = final_weights(run_dir)
    fit(config.replace(epochs=2), lambda event: None, resume_dir=run_dir)
    after = final_weights(run_dir)
    assert any(not torch.equal(before[key], after[key]) for key in before if before[key].is_floating_point())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epoch_two = next(row for row in rows if row["type"] == "epoch" and row["epoch"] == 2)
    assert epoch_two["lr"] == pytest.approx(0.5 * config.lr, rel=1e-6)  # cosine at half way: the step it took
