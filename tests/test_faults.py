"""Faults and bad input: each ends in a clear sentence, and nothing already saved is lost."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.cli import REPO, one_line_error
from tests.support.events import Recorder, wait_for
from tests.support.folders import folder_config, image_folder, photo_folder
from workbench.cli import main
from workbench.core import runs
from workbench.core.errors import WorkbenchError
from workbench.core.events import Failed, Finished, Notice
from workbench.core.training.engine import fit


def test_bad_files_are_skipped_by_path_and_training_proceeds(tiny, recorder, tmp_path):
    folder = photo_folder(tmp_path / "folder")
    run_dir = fit(tiny(dataset=str(folder), arch="linear", batch_size=8), recorder)
    assert recorder.last(Finished).status == "finished"
    warnings = " ".join(n.message for n in recorder.of(Notice) if n.level == "warning")
    for name in ("truncated.jpg", "empty.jpg", "notes.png"):
        assert name in warnings
    assert len(runs.read_run_info(run_dir)["skipped_files"]) == 3


def test_empty_class_folder_is_one_clear_error(tiny, recorder, tmp_path):
    folder = photo_folder(tmp_path / "folder", bad=False)
    (folder / "train" / "class2").mkdir()
    (folder / "test" / "class2").mkdir()
    fit(tiny(dataset=str(folder)), recorder)
    failed = recorder.last(Failed)
    assert failed.bad_input and "class2" in failed.reason and "\n" not in failed.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_asked_without_a_gpu(tmp_path, capsys):
    code = main(["train", "--device", "cuda", "--runs-dir", str(tmp_path), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_auto_device_falls_back_to_cpu_with_a_notice(tiny, recorder):
    fit(tiny(device="auto", arch="linear", batch_size=512), recorder)
    assert any("no GPU found" in n.message for n in recorder.of(Notice))
    assert recorder.last(Finished) is not None


def test_unwritable_runs_folder_fails_before_training(tiny, recorder, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should be")
    fit(tiny(runs_dir=str(blocker / "runs")), recorder)
    failed = recorder.last(Failed)
    assert failed.bad_input and "cannot write to runs folder" in failed.reason
    assert failed.run_dir is None


def test_full_runs_folder_fails_before_training(tiny, recorder, monkeypatch):
    monkeypatch.setattr(runs, "_free_mb", lambda path: 3.0)
    fit(tiny(), recorder)
    failed = recorder.last(Failed)
    assert failed.bad_input and "only 3 MB free" in failed.reason


def test_create_run_dir_checks_writability(tmp_path):
    from workbench.core.config import RunConfig

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkbenchError, match="--runs-dir"):
        runs.create_run_dir(RunConfig(runs_dir=str(blocker)))


def test_a_stop_during_decoding_ends_it_at_the_next_batch(tmp_path, monkeypatch):
    from workbench.core.data import folders, scan
    from workbench.core.errors import StopRequested

    folder = photo_folder(tmp_path / "folder", bad=False)
    monkeypatch.setattr(folders, "_DECODE_BATCH", 4)
    paths = [path for path, _ in scan.scan(folder).train_files]
    checks = []

    def stop_after_two_batches():
        checks.append(1)
        return len(checks) > 2

    with pytest.raises(StopRequested):
        folders._decode_files(paths, 16, stop_after_two_batches)
    assert len(paths) > 3 * 4  # so the stop came before the end


def test_stop_while_preparing_data_ends_with_no_run_and_no_cache(tiny, recorder, tmp_path):
    from workbench.core.training.control import TrainControl

    control = TrainControl()
    control.stop()  # as if x was pressed while the images were still being made
    config = tiny(data_dir=str(tmp_path / "fresh-data"), runs_dir=str(tmp_path / "runs"))
    assert fit(config, recorder, control) is None
    finished = recorder.last(Finished)
    assert (finished.run_dir, finished.status, finished.epochs_done) == (None, "stopped", 0)
    assert not recorder.of(Failed)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not list((tmp_path / "fresh-data").rglob("*.safetensors"))


# ---- hangs: someone's code that never returns --------------------------------------------------


def _trainer(tmp_path, data_dir, factory_body: str, epochs: int = 1, **env):
    """`workbench train` in a process of its own, on a network file whose factory runs `factory_body`."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    net = tmp_path / "nets.py"
    net.write_text(
        "import pathlib, threading, time\nimport torch.nn as nn\n"
        "def make(in_channels, num_classes, image_size):\n"
        f"    pathlib.Path({str(tmp_path / 'called')!r}).write_text('x')\n"
        + "".join(f"    {line}\n" for line in factory_body.splitlines())
        + "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))\n"
    )
    repo = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "workbench", "train", "--arch", f"{net}:make", "--dataset", "shapes",
               "--image-size", "8", "--epochs", str(epochs), "--device", "cpu", "--data-dir", str(data_dir),
               "--runs-dir", str(tmp_path / "runs")]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(repo), **env})


def test_hangs_sigterm_ends_a_factory_that_never_returns_within_the_grace(tmp_path, data_dir):
    import signal
    import time

    trainer = _trainer(tmp_path, data_dir, "while True:\n    pass", WORKBENCH_STOP_GRACE_S="1")
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "called").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # inside the loop now
        trainer.send_signal(signal.SIGTERM)
        out, err = trainer.communicate(timeout=60)  # a hang fails here instead of hanging the suite
    finally:
        trainer.kill()
    assert trainer.returncode == 143
    lines = [line for line in err.splitlines() if line.startswith("workbench: error:")]
    assert len(lines) == 1 and "did not stop within 1 s of SIGTERM" in lines[0] and "Traceback" not in err
    assert "nothing to resume" in lines[0] and "resume it from" not in lines[0]  # no checkpoint was ever saved


def test_hangs_a_network_file_that_ignores_sigterm_still_stops_on_sigterm(tmp_path, data_dir):
    import signal
    import time

    trainer = _trainer(tmp_path, data_dir, "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)", epochs=500,
                       WORKBENCH_STOP_GRACE_S="20")
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("runs/*/checkpoints/last.pt")) and time.monotonic() < deadline:
            time.sleep(0.1)  # training, past every call of the factory
        trainer.send_signal(signal.SIGTERM)
        out, err = trainer.communicate(timeout=60)  # the file's SIG_IGN made this wait for ever
    finally:
        trainer.kill()
    assert trainer.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM: stopping after this step" in out
    (run_dir,) = tmp_path.glob("runs/*")
    assert runs.read_status(run_dir)[0] == "stopped"


def test_hangs_a_factory_that_leaves_a_thread_running_does_not_keep_the_process_alive(tmp_path, data_dir):
    trainer = _trainer(tmp_path, data_dir, "threading.Thread(target=time.sleep, args=(3600,), name='forever').start()")
    try:
        out, err = trainer.communicate(timeout=240)
    finally:
        trainer.kill()
    assert trainer.returncode == 0 and "finished after 1 epoch" in out
    assert "thread(s) still running (forever" in err


def test_hangs_a_bad_stop_grace_is_one_line_naming_the_variable(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_STOP_GRACE_S", "abc")
    code = main(["train", "--dataset", "shapes", "--epochs", "1", "--device", "cpu", "--data-dir", str(data_dir),
                 "--runs-dir", str(tmp_path / "runs")])
    assert code == 2 and "WORKBENCH_STOP_GRACE_S='abc'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


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


def test_sigterm_stops_headless_training_cleanly_with_exit_143(tmp_path):
    dataset = image_folder(tmp_path / "animals", per_class=200)
    command = [sys.executable, "-m", "workbench", "train", "--dataset", str(dataset), "--arch", "linear",
               "--epochs", "50", "--batch-size", "2", "--image-size", "8", "--device", "cpu", "--augment", "none",
               "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: (tmp_path / "runs").is_dir() and any((tmp_path / "runs").glob("*/metrics.jsonl")), 60)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, (out, err)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert runs.read_status(run_dir) == ("stopped", "SIGTERM")
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert "Traceback" not in err and "SIGTERM" in out


def test_a_read_only_run_folder_gets_a_sentence(finished_run, tmp_path, capsys, monkeypatch):
    run_dir, dataset = finished_run
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == run_dir else real(path, mode))
    assert "read-only" in one_line_error(capsys, ["export", str(run_dir)])
    assert "read-only" in one_line_error(capsys, ["train", "--resume", str(run_dir), "--epochs", "2",
                                                  "--data-dir", str(tmp_path / "data")])


def test_sigterm_while_the_data_is_prepared_exits_143(tmp_path):
    dataset = image_folder(tmp_path / "animals", per_class=1500, size=32)
    command = [sys.executable, "-m", "workbench", "train", "--dataset", str(dataset), "--arch", "linear", "--epochs",
               "1", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("decoding"):
            break
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, (out, err)
    assert "checkpoint" not in out  # there is none to save yet
