"""Trust, second round: nothing saved is rewritten by a mistake, and bad input gets one line.

One test (or a few) per class of problem; each builds its small data itself (no network, no GPU).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import Recorder
from workbench.cli import main
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.config import RunConfig
from workbench.core.events import Failed, Finished, StepMetrics
from workbench.core.training.control import TrainControl
from workbench.core.training.engine import fit

REPO = Path(__file__).resolve().parent.parent


def image_folder(root: Path, classes=("ant", "bee", "cow"), per_class: int = 12, size: int = 8) -> Path:
    """train/<class>/*.png and test/<class>/*.png: small coloured squares, one colour per class."""
    generator = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", max(per_class // 3, 2))):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = np.clip(generator.normal(60 + 80 * label, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return root


def folder_config(tmp_path: Path, dataset: Path, **changes) -> RunConfig:
    values = dict(dataset=str(dataset), arch="linear", epochs=1, batch_size=8, device="cpu", image_size=8,
                  data_dir=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"), augment="none", val_fraction=0.2)
    return RunConfig.from_mapping({**values, **changes})


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (hidden ones included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI in this process: it must exit 2 with exactly one line on stderr."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(err) == 1 and err[0].startswith("workbench: error: "), err
    return err[0]


@pytest.fixture
def finished_run(tmp_path):
    dataset = image_folder(tmp_path / "animals")
    run_dir = fit(folder_config(tmp_path, dataset), lambda event: None)
    assert runs.read_status(run_dir)[0] == "finished"
    return run_dir, dataset


# ---- 1. one owner per run folder -------------------------------------------------------------


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
        (run_dir,) = [p for p in (tmp_path / "runs").iterdir()] if _wait_for(lambda: (tmp_path / "runs").is_dir() and any((tmp_path / "runs").iterdir())) else []
        assert _wait_for(lambda: runs.is_locked(run_dir))
        recorder = Recorder()
        fit(folder_config(tmp_path, dataset, epochs=3), recorder, resume_dir=run_dir)
        assert "being trained by process" in recorder.last(Failed).reason
        assert runs.read_status(run_dir)[0] == "running"  # the live run was not marked failed
    finally:
        control.stop()
        thread.join(60)
    assert runs.read_status(holder["dir"])[0] == "stopped"


def _wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_stale_pid_never_decides(finished_run):
    run_dir, _ = finished_run
    info = runs.read_run_info(run_dir)
    runs.write_run_info(run_dir, {**info, "pid": os.getpid()})  # alive, but not training it
    runs.write_status(run_dir, "running")
    assert runs.is_interrupted(run_dir)  # nobody holds the lock


# ---- 2 and 3. a refused resume writes nothing --------------------------------------------------


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


# ---- 4. a torn metrics line -------------------------------------------------------------------


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


# ---- 5. an export bundle is written whole -----------------------------------------------------


def test_a_new_export_replaces_the_whole_bundle_and_a_failed_one_writes_nothing(finished_run, tmp_path, monkeypatch):
    import builtins

    from workbench.core.errors import WorkbenchError
    from workbench.core.export.bundle import export_run

    run_dir, dataset = finished_run
    export_run(run_dir, ("safetensors", "onnx"))
    assert (run_dir / "export" / "model.onnx").is_file()
    fit(folder_config(tmp_path, dataset, epochs=2), lambda event: None, resume_dir=run_dir)
    export_run(run_dir, ("safetensors",), which="last")
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["model.json", "model.safetensors"]
    assert json.loads((run_dir / "export" / "model.json").read_text())["epoch"] == 2
    before = snapshot(run_dir)

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.startswith("onnx"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(WorkbenchError, match="nothing was exported"):
        export_run(run_dir, ("safetensors", "pt2", "onnx"))
    assert snapshot(run_dir) == before
    assert not list(run_dir.glob(".export-*"))


# ---- 6 and 7. scanning folders, streaming them ------------------------------------------------


def test_folder_scanning_ends_counts_each_file_once_and_lists_what_it_skips(tmp_path):
    from workbench.core.data import scan as folders

    dataset = image_folder(tmp_path / "animals")
    ant = dataset / "train" / "ant"
    (ant / "loop").symlink_to(ant)  # a loop to "."
    (ant / "deeper").mkdir()
    (ant / "deeper" / "back").symlink_to(ant)  # a loop that branches
    (ant / "deeper" / "up").symlink_to(dataset / "train")  # into the split: other classes' files stay theirs
    (ant / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a link to nothing
    os.mkfifo(ant / "pipe.png")  # would block a decoder forever
    warnings: list[str] = []
    scan = folders.scan(dataset, warnings.append)
    train_paths = [path for path, _ in scan.train_files]
    assert len(train_paths) == 3 * 12 and len({os.path.realpath(p) for p in train_paths}) == 36
    assert any("gone.png: a link to nothing" in line for line in scan.skipped)
    assert any("pipe.png: not a regular file" in line for line in scan.skipped)
    assert warnings and all(line.startswith("skipping") for line in warnings)
    from workbench.core.data.load import load_dataset

    data = load_dataset(str(dataset), data_dir=tmp_path / "data", image_size=8)
    assert len(data.train) == 36 and any("pipe.png" in line for line in data.skipped)


def test_streaming_skips_and_lists_the_same_unreadable_files_as_memory(tmp_path):
    from workbench.core.data.load import load_dataset

    dataset = image_folder(tmp_path / "animals")
    (dataset / "test" / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (dataset / "train" / "cow" / "empty.png").write_bytes(b"")
    memory = load_dataset(str(dataset), data_dir=tmp_path / "data", image_size=8)
    streamed = load_dataset(str(dataset), data_dir=tmp_path / "data", image_size=8, stream_over_mb=1e-6)
    assert type(streamed.train.images).__name__ == "FileImages"

    def names(lines):
        return sorted(line.split(":")[0] for line in lines)

    assert names(streamed.skipped) == names(memory.skipped) == sorted(
        [str((dataset / "test" / "bee" / "broken.png").resolve()), str((dataset / "train" / "cow" / "empty.png").resolve())]
    )
    assert (len(streamed.train), len(streamed.test)) == (len(memory.train), len(memory.test))
    recorder = Recorder()
    fit(folder_config(tmp_path, dataset, stream_over_mb=1e-6, val_fraction=0.0), recorder)
    assert recorder.last(Finished).final_test_acc is not None, recorder.events[-1]


# ---- 8. user strings are shown literally -------------------------------------------------------


def test_markup_characters_in_paths_are_shown_literally(tmp_path, capsys):
    dataset = image_folder(tmp_path / "data[/]set [b]")
    runs_dir = tmp_path / "runs[/]x [red]"
    argv = ["train", "--dataset", str(dataset), "--arch", "linear", "--epochs", "1", "--device", "cpu",
            "--image-size", "8", "--batch-size", "8", "--runs-dir", str(runs_dir), "--data-dir", str(tmp_path / "d")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert str(runs_dir) in out
    assert main(["runs", "--runs-dir", str(runs_dir)]) == 0
    assert "linear" in capsys.readouterr().out
    assert main(["models", "--dataset", str(dataset)]) == 0
    assert "data[/]set [b]" in capsys.readouterr().out


# ---- 9. one line instead of a traceback ------------------------------------------------------


def test_bad_files_and_paths_get_one_line(tmp_path, capsys):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert "is a folder" in one_line_error(capsys, ["train", "--config", str(folder)])
    latin = tmp_path / "latin.toml"
    latin.write_bytes('arch = "caf\xe9"\n'.encode("latin-1"))
    assert "not UTF-8" in one_line_error(capsys, ["train", "--config", str(latin)])
    assert "~nosuchuser" in one_line_error(capsys, ["train", "--dataset", "~nosuchuser/x", "--device", "cpu"])


def test_a_status_file_that_is_not_utf8_does_not_break_the_runs_list(finished_run, capsys):
    run_dir, _ = finished_run
    (run_dir / "status").write_bytes(b"\xff\xfe\x00garbage")
    assert main(["runs", "--runs-dir", str(run_dir.parent), "--plain"]) == 0
    assert "unknown" in capsys.readouterr().out


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda meta: meta["preprocessing"].update(std=[0.0, 0.2, 0.2]), "std must be positive"),
        (lambda meta: meta.update(classes=meta["classes"][:2]), "lists 2 classes"),
        (lambda meta: meta.update(image_size="eight"), "image_size must be a positive whole number"),
        (lambda meta: meta.update(in_channels=1), "one finite number per channel"),
        (lambda meta: meta["preprocessing"].update(mean=[0.5]), None),  # one value for all channels is fine
    ],
)
def test_predict_refuses_a_damaged_bundle_in_one_line(finished_run, tmp_path, capsys, damage, words):
    run_dir, dataset = finished_run
    assert main(["export", str(run_dir)]) == 0
    capsys.readouterr()
    meta_path = run_dir / "export" / "model.json"
    meta = json.loads(meta_path.read_text())
    damage(meta)
    meta_path.write_text(json.dumps(meta))
    image = next((dataset / "test" / "ant").glob("*.png"))
    if words is None:
        assert main(["predict", str(run_dir / "export"), str(image)]) == 0
    else:
        assert words in one_line_error(capsys, ["predict", str(run_dir / "export"), str(image)])


def test_predict_refuses_weights_of_the_wrong_shape_and_export_a_damaged_run_json(finished_run, capsys):
    from safetensors.torch import load_file, save_file

    run_dir, dataset = finished_run
    assert main(["export", str(run_dir)]) == 0
    weights_path = run_dir / "export" / "model.safetensors"
    weights = load_file(str(weights_path))
    name = next(iter(weights))
    weights[name] = torch.zeros(3, 3)
    save_file(weights, str(weights_path))
    image = next((dataset / "test" / "ant").glob("*.png"))
    assert "do not fit model.json" in one_line_error(capsys, ["predict", str(run_dir / "export"), str(image)])
    (run_dir / "run.json").write_text("{not json")
    assert "run.json is missing or damaged" in one_line_error(capsys, ["export", str(run_dir)])


# ---- 10. a full disk ------------------------------------------------------------------------


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_says_where(finished_run, tmp_path, monkeypatch):
    run_dir, dataset = finished_run
    previous = (run_dir / "checkpoints" / "last.pt").read_bytes()
    real_save, real_statvfs = torch.save, os.statvfs

    def full_save(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:
            handle.write(b"PK partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, handle, *args, **kwargs)

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(torch, "save", full_save)
    monkeypatch.setattr(os, "statvfs", lambda path: Full() if "checkpoints" in str(path) else real_statvfs(path))
    recorder = Recorder()
    fit(folder_config(tmp_path, dataset, epochs=2), recorder, resume_dir=run_dir)
    failed = recorder.last(Failed)
    assert failed is not None and "is full" in failed.reason and str(run_dir / "checkpoints") in failed.reason
    assert "inline_container" not in failed.reason
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == previous
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert errno.ENOSPC  # the errno the message stands for


# ---- 11. SIGTERM --------------------------------------------------------------------------------


def test_sigterm_stops_headless_training_cleanly_with_exit_143(tmp_path):
    dataset = image_folder(tmp_path / "animals", per_class=200)
    command = [sys.executable, "-m", "workbench", "train", "--dataset", str(dataset), "--arch", "linear",
               "--epochs", "50", "--batch-size", "2", "--image-size", "8", "--device", "cpu", "--augment", "none",
               "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (tmp_path / "runs").is_dir() and any((tmp_path / "runs").glob("*/metrics.jsonl")), 60)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, (out, err)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert runs.read_status(run_dir) == ("stopped", "SIGTERM")
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert "Traceback" not in err and "SIGTERM" in out


# ---- 12. numbers, counts, wording, permissions -------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_numbers_are_refused_in_flags_and_toml(value, tmp_path, capsys):
    assert "finite" in one_line_error(capsys, ["train", f"--lr={value}"])
    toml = tmp_path / "run.toml"
    toml.write_text(f"momentum = {value}\n")
    assert "finite" in one_line_error(capsys, ["train", "--config", str(toml)])


def test_runs_shows_done_and_target_after_a_resume_with_more_epochs(finished_run, tmp_path, capsys):
    run_dir, dataset = finished_run
    fit(folder_config(tmp_path, dataset, epochs=3), lambda event: None, resume_dir=run_dir)
    assert main(["runs", "--runs-dir", str(run_dir.parent), "--plain"]) == 0
    assert "\t3/3\t" in capsys.readouterr().out
    assert runs.read_config(run_dir).epochs == 3  # a later plain resume continues to 3, not 1


def test_a_failure_reason_carries_no_prefix_of_its_own(tiny):
    recorder = Recorder()
    fit(tiny(epochs=2, optimizer="sgd", lr=1e6, momentum=0.0, arch="linear"), recorder)
    reason = recorder.last(Failed).reason
    assert not reason.lower().startswith("training failed")  # the UI adds "training failed:" once


def test_files_a_run_writes_follow_the_umask(tmp_path):
    code = textwrap.dedent(
        f"""
        import os, sys
        os.umask(0o027)
        sys.argv = ["workbench"]
        from workbench.cli import main
        raise SystemExit(main(["train", "--dataset", "shapes", "--arch", "linear", "--epochs", "1", "--device", "cpu",
                               "--runs-dir", {str(tmp_path / 'runs')!r}, "--data-dir", {str(tmp_path / 'data')!r}]))
        """
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert main(["export", str(run_dir)]) == 0 or True
    for relative in ("status", "run.json", "config.toml", "metrics.jsonl", "checkpoints/last.pt",
                     "images/confusion.png", "images/confusion.json"):
        assert oct((run_dir / relative).stat().st_mode & 0o777) == oct(0o640), relative
