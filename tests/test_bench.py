"""`workbench bench`: one quick end-to-end run, one-line errors for bad options, and its image files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.bench.command import others_cpu_share
from workbench.bench.reference import (
    class_folder_names,
    even_per_class,
    export_pngs,
    prepare_data,
)
from workbench.cli import main
from workbench.core.config import RunConfig
from workbench.core.data.types import Split


def run_cli(*args) -> int:
    """main() in-process; argparse's own errors leave through SystemExit."""
    try:
        return main(["bench", *map(str, args)])
    except SystemExit as stop:
        return int(stop.code)


def test_quick_bench_reports_both_sides_and_writes_json(tmp_path, data_dir, capsys):
    out = tmp_path / "out.json"
    # One torch thread: on a busy machine two threads wait on each other at every parallel region.
    code = run_cli("--quick", "--dataset", "shapes", "--device", "cpu", "--json", out,
                   "--data-dir", data_dir, "--target-acc", "0.2", "--threads", "1")
    printed = capsys.readouterr().out
    assert code == 0, printed
    for words in ("engine", "reference", "train images/s", "ratio", "not timed", "time to 20.0% test accuracy"):
        assert words in printed
    report = json.loads(out.read_text())
    engine, reference = report["engine"], report["reference"]
    assert engine["images_per_s"] > 0 and reference["images_per_s"] > 0
    assert report["ratio"]["images_per_s"] == pytest.approx(engine["images_per_s"] / reference["images_per_s"])
    assert report["ratio"]["epoch_s"] == pytest.approx(reference["epoch_s"] / engine["epoch_s"])
    assert engine["epoch_cpu_s"] > 0 and reference["epoch_cpu_s"] > 0
    assert report["data"]["train_images"] == 4096 and report["data"]["test_images"] == 1024
    assert len(engine["epochs"]) == len(reference["epochs"]) == 1
    # The engine drops a ragged last batch; the reference (like the seed) keeps it.
    assert engine["epochs"][0]["train_images"] == 4096 // 128 * 128
    assert reference["epochs"][0]["train_images"] == 4096
    for key in ("device_name", "torch", "cpu_count", "torch_threads", "load_avg_before"):
        assert key in report["machine"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--workers", "-1"], "--workers"),
        (["--threads", "0"], "--threads"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "many"], "--batch-size"),
        (["--arch", "nope"], "unknown architecture"),
        (["--augment", "zoom"], "--augment"),
        (["--device", "tpu"], "--device"),
        (["--target-acc", "50"], "--target-acc"),
        (["--max-images", "0"], "--max-images"),
        (["--max-images", "5", "--dataset", "shapes"], "fewer than"),
        (["--dataset", "no/such/folder"], "does not exist"),
        (["--precision", "fp16", "--device", "cpu"], "fp16"),
        (["--json", "no/such/folder/out.json"], "--json"),
    ],
)
def test_bad_options_exit_2_with_one_line(args, words, data_dir, capsys):
    code = run_cli(*args, "--data-dir", data_dir)
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1, err


def test_even_per_class_splits_the_limit_over_classes():
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 2)
    rows = even_per_class(labels, 7)
    assert torch.bincount(labels[rows]).tolist() == [3, 2, 2]
    assert rows[labels[rows] == 0].tolist() == [0, 4, 9]  # spread over the class, not its first files
    assert even_per_class(labels, None).tolist() == list(range(22))


def test_png_export_writes_each_chosen_image_exactly(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([0, 1, 2] * 4)
    classes = ["cat", "horizontal stripes", "a/b"]
    rows = even_per_class(labels, 9)
    counts = export_pngs(Split(images, labels, None), rows, classes, tmp_path)
    names = class_folder_names(classes)
    assert names == ["0_cat", "1_horizontal_stripes", "2_a_b"]
    assert counts == dict.fromkeys(names, 3)
    for label, name in enumerate(names):
        files = sorted((tmp_path / name).iterdir())
        assert len(files) == 3
        row = int(files[0].stem)
        assert labels[row] == label
        pixels = torch.from_numpy(np.array(Image.open(files[0]))).permute(2, 0, 1)
        assert torch.equal(pixels, images[row])


def test_a_folder_without_test_split_is_linked_for_both_sides(tmp_path):
    root = tmp_path / "pets"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (40, 30), (i * 20, 0, 0)).save(root / name / f"{i}.png")
    config = RunConfig.from_mapping({"dataset": str(root), "data_dir": str(tmp_path / "data"), "device": "cpu"})
    data = prepare_data(config, 8, None, tmp_path / "work", log=lambda message: None)
    counts = {split: {c.name: len(list(c.iterdir())) for c in (data.folder / split).iterdir()} for split in ("train", "test")}
    assert counts == {"train": {"cat": 4, "dog": 4}, "test": {"cat": 1, "dog": 1}}
    assert len(data.dataset.train) == 8 and len(data.dataset.test) == 2
    assert data.resize  # 40x30 files: the reference resizes them like the engine's decoder
    assert not (tmp_path / "data").exists()  # the linked tree's cache stays in the work folder


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
def test_other_programs_cpu_use_is_measured_not_taken_from_the_load_average():
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)
        share = others_cpu_share(1.0)  # one busy process on N CPUs: about 1/N
    finally:
        spinner.kill()
    cpus = sum(line.startswith("cpu") and line[3].isdigit() for line in Path("/proc/stat").read_text().splitlines())
    assert share is not None and 0.6 / cpus <= share <= 1.0


def test_warm_up_stop_counts_training_steps_not_stop_checks():
    from workbench.core.training.control import StopAfterSteps

    control = StopAfterSteps(3)
    assert not any(control.stop_requested for _ in range(100))  # e.g. checks between decoding batches
    for _ in range(2):
        control.wait_while_paused()
    assert not control.stop_requested
    control.wait_while_paused()
    assert control.stop_requested


@pytest.mark.parametrize("flags", [["--threads", "100000"], ["--workers", "100000"], ["--threads", "0"],
                                   ["--workers", "-1"]])
def test_bench_bounds_threads_and_workers_in_one_line(flags, tmp_path, capsys):
    from tests.support.cli import one_line_error

    out = tmp_path / "bench.json"
    error = one_line_error(capsys, ["bench", "--quick", "--device", "cpu", "--json", str(out), *flags])
    assert flags[0] in error and "per CPU core" in error
    assert not out.exists()
