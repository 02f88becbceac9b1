"""`workbench reproduce seed-table` and the settings it needs: the seed's conditions, its mistake."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from tests.support.cli import run_here
from workbench.core import seed_table
from workbench.core.seed_table import class_sorted, shuffled, train_mode_accuracy

TINY = ["--dataset", "shapes", "--epochs", "1", "--image-size", "16", "--device", "cpu"]


def _reproduce(tmp_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_here("reproduce", "seed-table", *TINY, "--runs-dir", tmp_path / "runs", "--data-dir", data_dir, *args,
                    cwd=tmp_path)


def test_the_table_has_both_conditions_the_seed_figure_and_the_seed_mistake(tmp_path, data_dir):
    result = _reproduce(tmp_path, data_dir, "--archs", "linear,convbn", "--json",
                        "--markdown", str(tmp_path / "table.md"))
    assert result.returncode == 0, result.stderr[-2000:]
    table = json.loads(result.stdout)
    rows = {row["arch"]: row for row in table["rows"]}
    assert list(rows) == ["linear", "convbn", "convbn in train mode"]
    for arch in ("linear", "convbn"):
        row = rows[arch]
        assert row["seed"] == seed_table.SEED_ACCURACY[arch]
        assert 0.2 < row["faithful"] <= 1 and 0.2 < row["normalised"] <= 1  # 10 classes: chance is 0.1
        assert row["faithful_minus_seed"] == row["faithful"] - row["seed"]
        assert row["normalised_minus_faithful"] == row["normalised"] - row["faithful"]
        assert set(row["runs"]) == {"faithful", "normalised"} and row["params"] > 0 and row["seconds"] > 0
        faithful_run = Path(row["runs"]["faithful"])
        info = json.loads((faithful_run / "run.json").read_text())
        assert info["mean"] == [0.0, 0.0, 0.0] and info["std"] == [1.0, 1.0, 1.0]  # pixels / 255 only
        normalised = json.loads((Path(row["runs"]["normalised"]) / "run.json").read_text())
        assert normalised["mean"] != [0.0, 0.0, 0.0]
    mistake = rows["convbn in train mode"]
    assert mistake["seed"] == seed_table.SEED_TRAIN_MODE_ACCURACY
    assert mistake["faithful"] < rows["convbn"]["faithful"] - 0.2  # class-sorted batches: far below eval mode
    assert "eval mode" in mistake["note"]
    markdown = (tmp_path / "table.md").read_text()
    assert "| architecture | params | seed | faithful | normalised |" in markdown
    assert markdown.count("\n| ") == 4  # header + three rows
    assert "Seed table: shapes" in result.stdout or table["heading"].startswith("Seed table: shapes")


def test_an_unknown_architecture_is_refused_before_any_run(tmp_path, data_dir):
    result = _reproduce(tmp_path, data_dir, "--archs", "linear,resnet18")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "resnet18" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_keeps_the_rows_already_trained(tmp_path, data_dir):
    command = [sys.executable, "-m", "workbench", "reproduce", "seed-table", "--dataset", "shapes", "--epochs", "3",
               "--image-size", "16", "--device", "cpu", "--archs", "linear,convbn",
               "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    tables = []
    while time.monotonic() < deadline and not tables:
        tables = [path for path in (tmp_path / "runs").glob("seed-table/*/table.json")]
        time.sleep(0.05)
    assert tables, "no row finished"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-2000:]
    rows = json.loads(tables[0].read_text())["rows"]
    assert rows[0]["arch"] == "linear" and rows[0]["faithful"] is not None
    assert "keeps the rows trained so far" in output and "Traceback" not in output


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def test_train_mode_evaluation_of_class_sorted_batches_is_the_seed_mistake():
    # Two classes told apart by brightness: BatchNorm on a one-class batch removes exactly that.
    labels = torch.tensor([0, 1] * 64)
    images = torch.where(labels[:, None, None, None] == 1, 200, 40).expand(-1, 3, 4, 4).to(torch.uint8).contiguous()
    model = _bn_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images.float() / 255), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        eval_acc = (model(images.float() / 255).argmax(1) == labels).float().mean().item()
    assert eval_acc == 1.0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sorted_acc = train_mode_accuracy(model, images, labels, [0.0], [1.0], class_sorted(labels), batch_size=32)
    model.load_state_dict(state)
    mixed_acc = train_mode_accuracy(model, images, labels, [0.0], [1.0], shuffled(len(labels)), batch_size=32)
    assert sorted_acc <= 0.6 < mixed_acc


def test_normalize_none_is_a_setting_with_one_line_refusals(tiny):
    from workbench.core.config import RunConfig
    from workbench.core.errors import ConfigError

    assert RunConfig().normalize == "auto"  # train, unless the run starts from trained weights
    assert tiny(normalize="none").normalize == "none"
    try:
        RunConfig.from_mapping({"normalize": "per-image"})
    except ConfigError as error:
        assert error.field == "normalize" and "train" in str(error)
    else:
        raise AssertionError("normalize per-image was accepted")


def test_normalize_none_trains_on_pixels_over_255_and_exports_them(tiny, recorder):
    from workbench.core.events import Finished
    from workbench.core.export.bundle import export_run
    from workbench.core.training.engine import fit

    run_dir = fit(tiny(normalize="none", epochs=1), recorder)
    assert recorder.last(Finished).status == "finished"
    bundle = run_dir / "export"
    assert bundle / "model.json" in export_run(run_dir)
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["preprocessing"]["mean"] == [0.0, 0.0, 0.0] and meta["preprocessing"]["std"] == [1.0, 1.0, 1.0]
    assert os.path.exists(bundle / "model.safetensors")


def test_a_markdown_file_that_cannot_be_written_is_refused_before_any_run(tmp_path, data_dir):
    result = _reproduce(tmp_path, data_dir, "--archs", "linear", "--markdown", str(tmp_path))
    assert result.returncode == 2 and "is a folder" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
