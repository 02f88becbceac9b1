"""The command line as a user runs it: a real subprocess, exit codes and one-line errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.support.cli import one_line_error, run_here, workbench
from tests.support.folders import image_folder
from workbench.cli import main
from workbench.core import runs
from workbench.core.wording import count


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    """One 2-epoch shapes run through the CLI, shared by the tests below."""
    work = tmp_path_factory.mktemp("cli")
    result = run_here(
        "train", "--dataset", "shapes", "--arch", "basic_cnn", "--epochs", 2, "--device", "cpu",
        "--data-dir", data_dir, "--runs-dir", work / "runs", "--batch-size", 256, cwd=work,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (work / "runs").iterdir()
    exported = run_here("export", run_dir, cwd=work)
    assert exported.returncode == 0, exported.stderr
    return work, run_dir, result


def test_help_lists_commands_and_defaults():
    result = run_here("--help")
    assert result.returncode == 0
    for word in ("train", "models", "export", "predict", "--optimizer", "default: shapes"):
        assert word in result.stdout
    train_help = run_here("train", "--help").stdout
    assert "--resume" in train_help and "(default: 10)" in train_help


def test_models_table_has_seed_counts():
    result = run_here("models", "--dataset", "cifar10")
    assert result.returncode == 0
    for name, params in [("linear", "30,730"), ("basic_cnn", "62,958"), ("seed_resnet", "1,965,066")]:
        line = next(l for l in result.stdout.splitlines() if f" {name} " in l)
        assert params in line


def test_train_writes_a_run_with_plain_epoch_lines(trained_run):
    _, run_dir, result = trained_run
    epoch_lines = [l for l in result.stdout.splitlines() if l.startswith("epoch ")]
    assert len(epoch_lines) == 2  # stdout is not a TTY: one plain line per epoch
    assert runs.read_status(run_dir)[0] == "finished"
    best, split, _ = runs.best_of(runs.epoch_records(runs.read_metrics(run_dir)))
    assert split == "val" and best > 0.3


def test_export_and_predict_agree_with_the_run(trained_run, tmp_path):
    work, run_dir, _ = trained_run
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    assert meta["arch"] == "basic_cnn" and len(meta["classes"]) == 10 and len(meta["preprocessing"]["mean"]) == 3

    # Predict on images of the test split saved as PNG: the CLI must match the in-process model.
    import torch

    from workbench.core.data.load import load_dataset
    from workbench.core.export.bundle import model_from_checkpoint
    from workbench.core.inspection.predictions import normalize

    model, _, info = model_from_checkpoint(run_dir)
    config = runs.read_config(run_dir)
    data = load_dataset("shapes", data_dir=config.resolved_data_dir())
    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(data.test.images[i].permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    with torch.inference_mode():
        probs = model(normalize(data.test.images[:3], info["mean"], info["std"])).softmax(1)
    result = run_here("predict", run_dir / "export", *paths, "--top", 1)
    assert result.returncode == 0, result.stderr
    top_lines = [l.strip().split("%", 1) for l in result.stdout.splitlines() if l.startswith("  ")]
    assert len(top_lines) == 3
    for row, (percent, name) in enumerate(top_lines):
        best = int(probs[row].argmax())
        assert name.strip() == info["classes"][best]
        assert float(percent) == pytest.approx(100 * float(probs[row, best]), abs=0.01)


def test_runs_lists_the_run(trained_run):
    work, run_dir, _ = trained_run
    result = run_here("runs", "--runs-dir", work / "runs")
    assert run_dir.name[:15] in result.stdout and "finished" in result.stdout
    header, row = result.stdout.splitlines()  # not a terminal: a header row, then one tab-separated run
    assert header.split("\t") == ["run", "arch", "lr", "dataset", "epochs", "best acc", "status"] and row.count("\t") == 6


def test_mc_dropout_does_not_apply_without_dropout(trained_run, tmp_path):
    work, run_dir, _ = trained_run
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    result = run_here("predict", run_dir / "export", image, "--mc-dropout", 5)
    assert result.returncode == 2 and "does not apply" in result.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--arch", "nope"], "unknown architecture"),
        (["train", "--dataset", "imagenet"], "--dataset"),
        (["train", "--optimizer", "rmsprop"], "invalid choice"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--lr", "-0.1"], "--lr"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--batch-size", "-1"], "--batch-size"),
        (["train", "--dataset", "/no/such/folder"], "does not exist"),
        (["train", "--epochs", "x"], "invalid int"),
        (["export", "/no/such/run"], "not a run folder"),
        (["predict", "/no/such/export", "a.png"], "not an export folder"),
        (["export", ".", "--format", "tflite"], None),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words, tmp_path):
    result = run_here(*args, "--runs-dir", tmp_path, cwd=tmp_path) if args[0] == "train" else run_here(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    if words:
        assert words in lines[0]


@pytest.mark.parametrize("args, words", [(["train", "--epochs", "x"], "invalid int"),
                                         (["export", "/no/such/run"], "not a run folder")])
def test_bad_input_ends_the_real_process_with_exit_2_and_no_traceback(args, words, tmp_path):
    """The cases above in this process; here the console command itself, for a flag argparse
    refuses and for a refusal of workbench's own."""
    result = workbench(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr
    assert words in result.stderr


def test_folder_without_class_subfolders_is_bad_input(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    result = run_here("train", "--dataset", tmp_path / "flat", "--runs-dir", tmp_path / "runs",
                       "--data-dir", tmp_path / "d", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 2 and "class" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_file_and_flag_override(tmp_path, data_dir):
    config = tmp_path / "run.toml"
    config.write_text('dataset = "shapes"\narch = "linear"\nepochs = 1\nbatch-size = 256\ndevice = "cpu"\n')
    result = run_here("train", "--config", config, "--arch", "mlp", "--data-dir", data_dir,
                       "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = runs.read_config(run_dir)
    assert saved.arch == "mlp" and saved.batch_size == 256


def test_unknown_toml_key_is_bad_input(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("learning_rate = 0.1\n")
    result = run_here("train", "--config", config, cwd=tmp_path)
    assert result.returncode == 2 and "learning_rate" in result.stderr


# ---- issue 21: text from files, folder names and user code reaches the terminal as text ----------

HOSTILE = "ant\x1b]52;c;SGVsbG8=\x07\x1b]0;owned\x07\x1b[2J\x9b31m\x7f"
RAW = ("\x1b", "\x07", "\x9b", "\x7f")


def _no_raw_controls(text: str) -> None:
    assert not any(character in text for character in RAW), repr(text)
    assert "\\x1b" in text, "the hostile text should be shown, escaped"


def test_output_shows_control_characters_as_text(tmp_path, capsys):
    from tests.support.folders import folder_config, image_folder
    from workbench.cli import main
    from workbench.core.training.engine import fit

    dataset = image_folder(tmp_path / "animals", classes=(HOSTILE, "bee", "cow"))
    run = fit(folder_config(tmp_path, dataset), lambda event: None)
    assert main(["export", str(run)]) == 0
    image = next((dataset / "test" / "bee").iterdir())
    capsys.readouterr()
    assert main(["predict", str(run / "export"), str(image)]) == 0
    _no_raw_controls(capsys.readouterr().out)  # a class name from model.json

    hostile_run = run.with_name(run.name + "\x1b]0;title\x07")  # a run folder's name
    run.rename(hostile_run)
    config = hostile_run / "config.toml"
    config.write_text(config.read_text().replace('optimizer = "', 'optimizer = "\\u001b[2J'))
    for argv in (["runs", "--runs-dir", str(hostile_run.parent)], ["compare", str(hostile_run), str(hostile_run)]):
        capsys.readouterr()
        main(argv)
        captured = capsys.readouterr()
        _no_raw_controls(captured.out + captured.err)


def test_shown_escapes_controls_and_keeps_unicode():
    from workbench.core.shown import shown

    assert shown("café 中文 👍 a b") == "café 中文 👍 a b"
    assert shown("a\x1b[2Jb\x07\x9b\x7f\u202e\n") == "a\\x1b[2Jb\\x07\\x9b\\x7f\\u202e\\x0a"


def test_markup_characters_in_paths_are_shown_literally(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the whole path fits on one line, however deep tmp_path is
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


def test_bad_files_and_paths_get_one_line(tmp_path, capsys):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert "is a folder" in one_line_error(capsys, ["train", "--config", str(folder)])
    latin = tmp_path / "latin.toml"
    latin.write_bytes('arch = "caf\xe9"\n'.encode("latin-1"))
    assert "not UTF-8" in one_line_error(capsys, ["train", "--config", str(latin)])
    assert "~nosuchuser" in one_line_error(capsys, ["train", "--dataset", "~nosuchuser/x", "--device", "cpu"])


def test_counts_are_singular_for_one():
    assert (count(1, "epoch"), count(2, "epoch"), count(1, "class"), count(10, "class")) == (
        "1 epoch", "2 epochs", "1 class", "10 classes")
    assert count(12_000, "image") == "12,000 images"


def test_control_sequences_in_a_runs_folder_name_are_shown_as_text_while_training(tmp_path, data_dir, capsys):
    from workbench.cli import main

    runs_dir = tmp_path / "runs\x1b]0;owned\x07"
    assert main(["train", "--dataset", "shapes", "--arch", "linear", "--epochs", "1", "--image-size", "8",
                 "--device", "cpu", "--data-dir", str(data_dir), "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "images: " in out and "\\x1b]0;owned\\x07" in out
    assert "\x1b" not in out and "\x07" not in out
