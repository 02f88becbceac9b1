"""Regressions for what a hostile review of the trust round found (one test per finding)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import Recorder
from tests.test_trust import REPO, folder_config, image_folder, one_line_error, snapshot
from workbench.cli import main
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.events import Failed
from workbench.core.training import run_folder
from workbench.core.training.engine import fit


@pytest.fixture
def finished_run(tmp_path):
    dataset = image_folder(tmp_path / "animals")
    run_dir = fit(folder_config(tmp_path, dataset), lambda event: None)
    return run_dir, dataset


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


def test_a_copied_folder_streams_with_its_own_list_of_unreadable_files(tmp_path):
    import shutil

    from workbench.core.data.load import load_dataset

    first = image_folder(tmp_path / "one" / "set")
    (first / "train" / "ant" / "bad.png").write_text("junk")
    shutil.copytree(first, tmp_path / "two" / "set", copy_function=shutil.copy2)
    second = tmp_path / "two" / "set"
    load_dataset(str(first), data_dir=tmp_path / "data", image_size=8, stream_over_mb=1e-6)
    streamed = load_dataset(str(second), data_dir=tmp_path / "data", image_size=8, stream_over_mb=1e-6)
    assert [line.split(":")[0] for line in streamed.skipped] == [str((second / "train" / "ant" / "bad.png").resolve())]


def test_streaming_refuses_a_class_without_readable_images_like_memory(tmp_path, capsys):
    dataset = image_folder(tmp_path / "animals")
    for path in (dataset / "train" / "cow").iterdir():
        path.write_text("not an image")
    args = ["train", "--dataset", str(dataset), "--arch", "linear", "--device", "cpu", "--image-size", "8",
            "--data-dir", str(tmp_path / "d"), "--runs-dir", str(tmp_path / "runs")]
    assert "has no readable images" in one_line_error(capsys, args)
    assert "has no readable images" in one_line_error(capsys, args + ["--stream-over-mb", "0.000001"])


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda meta, weights: meta.update(arch=["linear"]), "is not an architecture"),
        (lambda meta, weights: meta["preprocessing"].update(std=[1e-320, 1, 1]), "std must be positive"),
        (lambda meta, weights: weights.update({k: v.half() for k, v in weights.items()}), None),
        (lambda meta, weights: weights.update({k: torch.full_like(v, float("nan")) for k, v in weights.items()}),
         "not all finite"),
    ],
)
def test_predict_refuses_hand_edited_bundles_in_one_line(finished_run, capsys, damage, words):
    from safetensors.torch import load_file, save_file

    run_dir, dataset = finished_run
    assert main(["export", str(run_dir)]) == 0
    capsys.readouterr()
    meta_path, weights_path = run_dir / "export" / "model.json", run_dir / "export" / "model.safetensors"
    meta, weights = json.loads(meta_path.read_text()), load_file(str(weights_path))
    damage(meta, weights)
    meta_path.write_text(json.dumps(meta))
    save_file(weights, str(weights_path))
    image = str(next((dataset / "test" / "ant").glob("*.png")))
    if words is None:  # float16 weights of the right shapes: read as the layers' own dtype
        assert main(["predict", str(run_dir / "export"), image]) == 0
    else:
        assert words in one_line_error(capsys, ["predict", str(run_dir / "export"), image])


def test_predict_json_that_nests_too_deep_and_a_missing_device_get_one_line(finished_run, capsys):
    run_dir, dataset = finished_run
    assert main(["export", str(run_dir)]) == 0
    image = str(next((dataset / "test" / "ant").glob("*.png")))
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in one_line_error(capsys, ["predict", str(run_dir / "export"), image, "--device", "cuda"])
    (run_dir / "export" / "model.json").write_text("[" * 100_000)
    assert "not readable JSON" in one_line_error(capsys, ["predict", str(run_dir / "export"), image])


def test_two_exports_of_one_run_at_once_both_finish(finished_run):
    run_dir, _ = finished_run
    command = [sys.executable, "-m", "workbench", "export", str(run_dir), "--format", "safetensors,pt2"]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["model.json", "model.pt2", "model.safetensors"]
    assert not list(run_dir.glob(".export-*"))


def test_onnx_verification_without_its_runtime_writes_nothing(finished_run, tmp_path):
    run_dir, _ = finished_run
    shim = tmp_path / "shim" / "onnxruntime"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('onnxruntime is hidden by this test')\n")
    before = snapshot(run_dir)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'shim'}{os.pathsep}{REPO}"}
    done = subprocess.run([sys.executable, "-m", "workbench", "export", str(run_dir), "--format", "onnx", "--verify"],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "onnxruntime" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert snapshot(run_dir) == before


def test_images_too_small_for_the_architecture_are_refused_before_a_run_folder(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    line = one_line_error(capsys, ["train", "--dataset", "shapes", "--arch", "basic_cnn", "--image-size", "8",
                                   "--device", "cpu", "--runs-dir", str(runs_dir), "--data-dir", str(tmp_path / "d")])
    assert "cannot take 8x8 images" in line and "at least 16 px" in line
    assert not runs_dir.exists() or not list(runs_dir.iterdir())
    assert "-5" not in str(main(["models", "--image-size", "-5"]))  # refused (exit 2), not drawn as 3x-5x-5
    assert "image-size" in capsys.readouterr().err


def test_names_that_are_not_utf8_are_refused_or_skipped_with_a_sentence(tmp_path, capsys):
    dataset = image_folder(tmp_path / "animals")
    os.rename(dataset / "train" / "bee" / "000.png", os.fsdecode(bytes(dataset / "train" / "bee") + b"/b\xff.png"))
    runs_dir = tmp_path / "runs"
    args = ["train", "--dataset", str(dataset), "--arch", "linear", "--device", "cpu", "--image-size", "8",
            "--epochs", "1", "--data-dir", str(tmp_path / "d"), "--runs-dir", str(runs_dir)]
    assert main(args) == 0  # the file with the odd name is skipped and listed
    (run_dir,) = runs_dir.iterdir()
    assert any("not valid UTF-8" in line for line in runs.read_run_info(run_dir)["skipped_files"])
    os.rename(dataset / "train" / "cow", os.fsdecode(bytes(dataset / "train") + b"/c\xffw"))
    assert "not valid UTF-8" in one_line_error(capsys, args + ["--runs-dir", str(tmp_path / "runs2")])
    assert not (tmp_path / "runs2").exists() or not list((tmp_path / "runs2").iterdir())


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


@pytest.mark.parametrize("flags", [["--seed", str(2**64)], ["--epochs", str(10**23)], ["--dataset", ""]])
def test_numbers_out_of_bounds_and_an_empty_data_set_get_one_line(flags, capsys):
    one_line_error(capsys, ["train", "--device", "cpu", *flags])


def test_a_link_to_a_folder_outside_the_data_set_is_not_followed(tmp_path):
    from workbench.core.data.scan import scan

    dataset = image_folder(tmp_path / "animals")
    elsewhere = image_folder(tmp_path / "elsewhere", classes=("x", "y"))
    (dataset / "train" / "ant" / "everything").symlink_to(elsewhere)
    found = scan(dataset)
    assert len(found.train_files) == 36
    assert any("a link to a folder outside the data set" in line for line in found.skipped)


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


def test_a_decompression_bomb_is_skipped_from_its_header(tmp_path):
    from workbench.core.data.folders import decode_image

    path = tmp_path / "bomb.png"
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 50_000, 50_000)  # IHDR width and height: 2.5 gigapixels
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="too large to decode"):
        decode_image(path, 8)
