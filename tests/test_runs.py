"""Run folders as files: what a reader does with a pipe where a file belongs, a full disk on an
append, and who the lock sentence names (issue 21)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.cli import one_line_error, run_here
from tests.support.folders import folder_config, image_folder
from workbench.cli import main
from workbench.core import runs
from workbench.core.errors import RunBusy, WorkbenchError
from workbench.core.training.engine import fit

# A reader that blocks on a FIFO never returns: run_here's alarm turns that hang into a failure.
PROMPT_S = 120


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("fifo")
    dataset = image_folder(base / "animals")
    run = fit(folder_config(base, dataset), lambda event: None)
    cli = _cli(base, "export", run)
    assert cli.returncode == 0, cli.stderr
    return base, run, dataset


def _cli(cwd, *args) -> subprocess.CompletedProcess:
    return run_here(*args, cwd=cwd, within=PROMPT_S)


def _copy_with_pipe(base, run, name: str, copy: str):
    target = base / copy / run.name
    shutil.copytree(run, target)
    (target / name).unlink()
    os.mkfifo(target / name)
    return target


@pytest.mark.parametrize("name", ["metrics.jsonl", "status", "run.json", "config.toml"])
def test_runs_and_compare_skip_a_pipe_in_a_run_folder_promptly(exported_run, name):
    base, run, _ = exported_run
    pipe_run = _copy_with_pipe(base, run, name, f"runs-{name}")
    listed = _cli(base, "runs", "--runs-dir", pipe_run.parent)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    compared = _cli(base, "compare", pipe_run, run)
    assert "Traceback" not in compared.stderr, compared.stderr
    assert compared.returncode == 0 or len(compared.stderr.strip().splitlines()) == 1, compared.stderr


@pytest.mark.parametrize("name", ["export/model.json", "export/model.safetensors", "run.json",
                                  "checkpoints/best.pt"])
def test_export_and_predict_refuse_a_pipe_in_one_line(exported_run, name):
    base, run, dataset = exported_run
    pipe_run = _copy_with_pipe(base, run, name, f"pipes-{name.replace('/', '-')}")
    image = next((dataset / "test" / "ant").iterdir())
    command = ["predict", pipe_run / "export", image] if name.startswith("export/") else ["export", pipe_run]
    result = _cli(base, *command)
    assert result.returncode == 2, (result.returncode, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert any(words in line for words in ("not a regular file", "missing or damaged")), line


def test_safe_read_refuses_a_pipe_without_blocking_and_reads_a_file_in_pieces(tmp_path):
    from workbench.core.safe_read import NotReadable, read_bytes, read_from, text_or_none

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NotReadable, match="not a regular file"):
        read_bytes(tmp_path / "pipe", 100)
    assert text_or_none(tmp_path / "pipe", 100) is None
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(NotReadable, match="larger than"):
        read_bytes(tmp_path / "big", 100)
    assert read_from(tmp_path / "big", 99, 10) == (b"xx", 101)
    assert read_from(tmp_path / "big", 200, 10) == (b"", 101)


def test_runs_full_disk_on_metrics_append_names_the_file(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    def full(path, mode="r", *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full)
    with pytest.raises(WorkbenchError) as raised:
        runs.append_metrics(tmp_path, {"type": "step"})
    message = str(raised.value)
    assert "metrics.jsonl" in message and "disk" in message and "full" in message and "free some space" in message


def test_runs_busy_sentence_does_not_name_a_dead_trainer(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    run = tmp_path / "run"
    run.mkdir()
    holder = runs.RunLock(run)
    holder.acquire()  # this process holds it; .lock names a process that has ended
    (run / runs.LOCK_FILE).write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "command": "train"}))
    with pytest.raises(RunBusy) as raised:
        runs.RunLock(run).acquire()
    holder.release()
    message = str(raised.value)
    assert "being trained by process" not in message and f"{pid}" in message and "has ended" in message


def test_runs_cleanup_of_killed_writes_keeps_the_users_own_files(tmp_path):
    from workbench.core.atomic import atomic_path, clean_temp_files

    (tmp_path / ".notes.tmp").write_text("mine")
    (tmp_path / ".draft.v2.tmp").write_text("mine too")
    try:
        with atomic_path(tmp_path / "last.pt") as temporary:
            temporary.write_bytes(b"half")
            raise KeyboardInterrupt  # killed half way: its temporary would normally go with it
    except KeyboardInterrupt:
        pass
    leftover = tmp_path / ".last.pt.abcd1234.tmp"
    leftover.write_bytes(b"half")  # what a SIGKILL leaves behind
    assert clean_temp_files(tmp_path) == [leftover]
    assert (tmp_path / ".notes.tmp").read_text() == "mine" and (tmp_path / ".draft.v2.tmp").exists()


def test_a_stale_pid_never_decides(finished_run):
    run_dir, _ = finished_run
    info = runs.read_run_info(run_dir)
    runs.write_run_info(run_dir, {**info, "pid": os.getpid()})  # alive, but not training it
    runs.write_status(run_dir, "running")
    assert runs.is_interrupted(run_dir)  # nobody holds the lock


def test_a_status_file_that_is_not_utf8_does_not_break_the_runs_list(finished_run, capsys):
    run_dir, _ = finished_run
    (run_dir / "status").write_bytes(b"\xff\xfe\x00garbage")
    assert main(["runs", "--runs-dir", str(run_dir.parent), "--plain"]) == 0
    assert "unknown" in capsys.readouterr().out


def test_runs_shows_done_and_target_after_a_resume_with_more_epochs(finished_run, tmp_path, capsys):
    run_dir, dataset = finished_run
    fit(folder_config(tmp_path, dataset, epochs=3), lambda event: None, resume_dir=run_dir)
    assert main(["runs", "--runs-dir", str(run_dir.parent), "--plain"]) == 0
    assert "\t3/3\t" in capsys.readouterr().out
    assert runs.read_config(run_dir).epochs == 3  # a later plain resume continues to 3, not 1


def test_files_a_run_writes_follow_the_umask(tmp_path, data_dir):
    before = os.umask(0o027)  # this process's own: put back below, whatever happens
    try:
        trained = run_here("train", "--dataset", "shapes", "--arch", "linear", "--epochs", "1", "--image-size", "12",
                           "--device", "cpu", "--runs-dir", tmp_path / "runs", "--data-dir", data_dir)
        assert trained.returncode == 0, trained.stderr
        (run_dir,) = (tmp_path / "runs").iterdir()
        exported = run_here("export", run_dir)
        assert exported.returncode == 0, exported.stderr
    finally:
        os.umask(before)
    for relative in ("status", "run.json", "config.toml", "metrics.jsonl", "checkpoints/last.pt",
                     "images/confusion.png", "images/confusion.json", "export/model.json", "export/model.safetensors"):
        assert oct((run_dir / relative).stat().st_mode & 0o777) == oct(0o640), relative


def test_pipes_where_files_belong_are_refused_instead_of_blocking(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    last = run_dir / "checkpoints" / "last.pt"
    last.unlink()
    os.mkfifo(last)
    (run_dir / "checkpoints" / "last.prev.pt").unlink(missing_ok=True)
    (run_dir / "checkpoints" / "best.pt").unlink(missing_ok=True)
    assert "not a regular file" in one_line_error(capsys, ["train", "--resume", str(run_dir), "--epochs", "2"])
    pipe = tmp_path / "run.toml"
    os.mkfifo(pipe)
    assert "not a regular file" in one_line_error(capsys, ["train", "--config", str(pipe)])


# ---- metrics out: CSV and TensorBoard ----------------------------------------------------------


def test_runs_export_writes_csv_and_tensorboard_files_that_read_back_as_the_runs_rows(finished_run, tmp_path, capsys):
    import csv
    import io

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = finished_run
    epochs = runs.epoch_records(runs.read_metrics(run_dir))
    assert main(["runs", "export", str(run_dir)]) == 0  # no target: the epochs' CSV on stdout
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(row["epoch"]) for row in table] == [row["epoch"] for row in epochs]
    assert float(table[-1]["val_acc"]) == pytest.approx(epochs[-1]["val_acc"])
    classes = list(epochs[-1]["per_class_acc"])
    assert float(table[-1][f"class_acc/{classes[0]}"]) == pytest.approx(epochs[-1]["per_class_acc"][classes[0]])
    steps_file = tmp_path / "steps.csv"
    assert main(["runs", "export", str(run_dir), "--steps", "--csv", str(steps_file)]) == 0
    steps = list(csv.DictReader(steps_file.open()))
    assert steps and {"global_step", "loss", "lr"} <= set(steps[0])
    assert main(["runs", "export", str(run_dir), "--tensorboard", str(tmp_path / "tb")]) == 0
    assert "tensorboard --logdir" in capsys.readouterr().err
    events = EventAccumulator(str(tmp_path / "tb" / run_dir.name))
    events.Reload()
    val = events.Scalars("epoch/val_acc")
    assert [point.step for point in val] == [row["global_step"] for row in epochs]
    assert val[-1].value == pytest.approx(epochs[-1]["val_acc"], rel=1e-6)
    assert "train/loss" in events.Tags()["scalars"]
    line = one_line_error(capsys, ["runs", "export", str(run_dir), "--tensorboard", str(tmp_path / "tb")])
    assert "already holds TensorBoard files of this run" in line


def test_runs_export_without_tensorboard_says_how_to_install_it(finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    line = one_line_error(capsys, ["runs", "export", str(finished_run[0]), "--tensorboard", str(tmp_path / "tb")])
    assert 'pip install -e ".[tensorboard]"' in line and not (tmp_path / "tb").exists()
