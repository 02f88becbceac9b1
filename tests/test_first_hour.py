"""A new user's first hour, the parts without a screen: data folders, validation, pauses, resize, wording."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch
from PIL import Image

from tests.conftest import Recorder
from tests.test_trust import folder_config, image_folder, one_line_error
from workbench.cli import main
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.events import EpochMetrics, Finished, Notice, StepMetrics
from workbench.core.training.control import TrainControl
from workbench.core.training.engine import fit
from workbench.core.wording import count

# ---- 3. a data folder one level too high -------------------------------------------------------


def test_a_folder_one_level_too_high_is_refused_naming_the_one_inside(tmp_path, capsys):
    image_folder(tmp_path / "downloads" / "cifar10")
    line = one_line_error(capsys, ["train", "--dataset", str(tmp_path / "downloads"), "--device", "cpu"])
    assert "holds one folder, cifar10" in line and f"--dataset {tmp_path / 'downloads' / 'cifar10'}" in line


def test_a_single_class_is_refused(tmp_path, capsys):
    image_folder(tmp_path / "one", classes=("only",))
    line = one_line_error(capsys, ["train", "--dataset", str(tmp_path / "one"), "--device", "cpu"])
    assert "needs at least 2 classes" in line


# ---- 4. model selection never looks at test data -------------------------------------------------


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


# ---- 5. paused time is not training time ---------------------------------------------------------


def test_time_spent_paused_is_in_no_reported_time(tiny):
    control = TrainControl()
    paused = []

    def sink(event):
        recorder(event)
        if isinstance(event, StepMetrics) and not paused:
            paused.append(time.perf_counter())
            control.pause()
            threading.Timer(1.5, control.resume).start()

    recorder = Recorder()
    started = time.perf_counter()
    fit(tiny(epochs=1, arch="linear", batch_size=16), sink, control)
    wall = time.perf_counter() - started
    finished = recorder.last(Finished)
    (epoch,) = recorder.of(EpochMetrics)
    assert paused and finished.status == "finished"
    assert finished.elapsed_s < wall - 1.2  # the pause is not in the elapsed time
    assert epoch.epoch_s < wall - 1.2 and epoch.elapsed_s < wall - 1.2
    steps = recorder.of(StepMetrics)
    assert all(later.elapsed_s - earlier.elapsed_s < 1.2 for earlier, later in zip(steps, steps[1:]))  # no jump
    # No sample's speed includes the pause: its images over its speed is its own duration.
    starts = [0] + [s.global_step for s in steps[:-1]]
    durations = [(s.global_step - start) * 16 / s.images_per_s for s, start in zip(steps, starts)]
    assert max(durations) < 1.2, durations


# ---- 6. a run stopped before any evaluation says so -----------------------------------------------


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


# ---- 12. aspect-preserving resize ---------------------------------------------------------------


def wide_image(path):
    """64x32: left half red, right half blue, a green 8-pixel stripe in the middle."""
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    image.paste((0, 255, 0), (28, 0, 36, 32))
    image.save(path)
    return path


def test_resize_modes_stretch_crop_or_pad(tmp_path):
    from workbench.core.data.folders import decode_image

    path = wide_image(tmp_path / "wide.png")
    stretch, crop, pad = (decode_image(path, 16, 3, mode) for mode in ("stretch", "crop", "pad"))
    assert crop[:, 8, 0].tolist() == [255, 0, 0] and crop[:, 8, 15].tolist() == [0, 0, 255]  # the centre square
    assert pad[:, 0, 8].tolist() == [0, 0, 0] and pad[:, 15, 8].tolist() == [0, 0, 0]  # black bars above and below
    assert pad[:, 8, 0].tolist() == [255, 0, 0]  # the whole width kept
    assert not torch.equal(stretch, crop) and not torch.equal(crop, pad)


def test_the_resize_mode_travels_with_the_run_to_predict(tmp_path, capsys):
    from workbench.core.export.predict import load_images

    dataset = image_folder(tmp_path / "animals")
    run_dir = fit(folder_config(tmp_path, dataset, resize="pad"), lambda event: None)
    assert runs.read_run_info(run_dir)["resize"] == "pad"
    assert main(["export", str(run_dir)]) == 0
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    assert meta["preprocessing"]["resize_mode"] == "pad"
    path = wide_image(tmp_path / "wide.png")
    assert torch.equal(load_images([str(path)], 8, 3, "pad")[0, :, 0], torch.zeros(3, 8, dtype=torch.uint8))
    assert main(["predict", str(run_dir / "export"), str(path)]) == 0
    assert "%" in capsys.readouterr().out


# ---- 13. wording and pictures -------------------------------------------------------------------


def test_counts_are_singular_for_one():
    assert (count(1, "epoch"), count(2, "epoch"), count(1, "class"), count(10, "class")) == (
        "1 epoch", "2 epochs", "1 class", "10 classes")
    assert count(12_000, "image") == "12,000 images"


def test_a_long_class_name_never_cuts_the_confidence(tmp_path):
    from workbench.core.inspection import grids

    cell = grids.Cell(0, 0, prediction=1, confidence=0.97)
    line = grids._strip_lines(cell, ["a", "a class name far too long to fit in one card"])[1]
    main_text, _, kept = line.partition("\t")
    font = grids._font(grids.TEXT_PX)
    fitted = grids._fit(main_text, font, 100 - font.getlength(kept)) + kept
    assert fitted.endswith("(97%)") and "…" in fitted


def test_the_confusion_legend_always_fits(tmp_path):
    from workbench.core.inspection import grids

    grids.save_confusion(tmp_path / "c.png", torch.tensor([[3, 1], [0, 4]]), ["x", "y"])
    with Image.open(tmp_path / "c.png") as image:
        assert image.width >= 2 * grids.MARGIN_PX + grids._legend_width(grids._font(grids.TEXT_PX))


# ---- 7 and 14. the README says what a fresh machine needs -----------------------------------------


def test_readme_tells_how_to_install_the_cpu_build_and_what_onnx_needs():
    from tests.test_packaging import REPO

    readme = (REPO / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
    assert "pip install -e \".[onnx]\"" in readme


@pytest.mark.parametrize("mode", ["stretch", "crop", "pad"])
def test_every_resize_mode_is_known_to_config_and_decoder(mode):
    from workbench.core.config import RESIZE_MODES as CONFIG_MODES
    from workbench.core.data.folders import RESIZE_MODES

    assert CONFIG_MODES == RESIZE_MODES and mode in RESIZE_MODES
