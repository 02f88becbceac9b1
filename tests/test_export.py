"""Verified export: every format reproduces the run's logits, and loading runs no code."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
import time

import pytest
import torch

from tests.support.cli import REPO, one_line_error
from tests.support.folders import folder_config, image_folder, snapshot, wide_image
from workbench.cli import main
from workbench.core import runs
from workbench.core.errors import WorkbenchError
from workbench.core.export.bundle import export_run, load_bundle, model_from_checkpoint
from workbench.core.export.predict import probabilities
from workbench.core.export.verify import TOLERANCE, verify_run_export
from workbench.core.training.engine import fit


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    from workbench.core.config import RunConfig

    runs_dir = tmp_path_factory.mktemp("export-runs")
    config = RunConfig.from_mapping(dict(
        dataset="shapes", arch="convbn", epochs=1, batch_size=256, device="cpu",
        data_dir=str(data_dir), runs_dir=str(runs_dir), augment="none",
    ))
    return fit(config, lambda event: None)


def test_all_formats_verify_within_tolerance(run_dir):
    written = export_run(run_dir, ("safetensors", "pt2", "onnx"))
    assert {p.name for p in written} == {"model.safetensors", "model.json", "model.pt2", "model.onnx"}
    results, batch = verify_run_export(run_dir, ("safetensors", "pt2", "onnx"))
    assert "test images" in batch
    assert [r.format for r in results] == ["safetensors", "pt2", "onnx"]
    for result in results:
        assert result.passed and result.max_abs_diff <= TOLERANCE


def test_model_json_carries_what_predict_needs(run_dir):
    export_run(run_dir)
    meta = json.loads((run_dir / "export" / "model.json").read_text())
    for key in ("arch", "in_channels", "image_size", "classes", "preprocessing", "best_val_acc", "chosen_by", "config"):
        assert key in meta
    assert meta["preprocessing"]["formula"] == "(pixel / 255 - mean) / std per channel"


def test_cli_verify_reports_each_format(run_dir, capsys):
    assert main(["export", str(run_dir), "--format", "safetensors,pt2", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify safetensors" in out and "verify pt2" in out and "MISMATCH" not in out


def test_a_tampered_export_fails_verification(run_dir):
    from safetensors.torch import load_file, save_file

    from workbench.core.export.verify import held_out_batch, verify_export

    export_run(run_dir)
    weights_path = run_dir / "export" / "model.safetensors"
    weights = load_file(str(weights_path))
    name = next(k for k in weights if k.endswith("weight"))
    weights[name] = weights[name] + 0.01
    save_file(weights, str(weights_path))
    model, _, _ = model_from_checkpoint(run_dir)
    batch, _ = held_out_batch(run_dir)
    (result,) = verify_export(model, run_dir / "export", ("safetensors",), batch)
    assert not result.passed and result.max_abs_diff > TOLERANCE


def hide_onnx(monkeypatch, prefix: str = "onnx") -> None:
    """Imports of onnx, onnxscript and onnxruntime (those starting with `prefix`) fail, as without
    the [onnx] extra."""
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.startswith(prefix):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)


def test_missing_onnx_extra_says_how_to_install(run_dir, monkeypatch):
    hide_onnx(monkeypatch)
    with pytest.raises(WorkbenchError, match=r"pip install 'workbench\[onnx\]'"):
        export_run(run_dir, ("onnx",))


def test_bundle_loads_without_pickle_and_mc_dropout_rules(run_dir):
    export_run(run_dir)
    model, meta = load_bundle(run_dir / "export")
    batch = torch.zeros(2, meta["in_channels"], meta["image_size"], meta["image_size"])
    mean, std = probabilities(model, batch)
    assert torch.allclose(mean.sum(1), torch.ones(2)) and torch.equal(std, torch.zeros_like(std))
    with pytest.raises(WorkbenchError, match="does not apply"):
        probabilities(model, batch, passes=5)  # convbn has no dropout


def test_verification_compares_with_the_model_exported_even_when_training_replaces_best_pt(tmp_path, data_dir):
    """The app exports while the run trains: best.pt may be replaced between writing the bundle
    and verifying it. The check must compare with the weights that were exported."""
    import shutil

    from workbench.core import checkpoint as ckpt
    from workbench.core.config import RunConfig

    config = RunConfig.from_mapping(dict(dataset="shapes", arch="linear", epochs=1, batch_size=256, device="cpu",
                                         data_dir=str(data_dir), runs_dir=str(tmp_path), augment="none",
                                         image_size=12))
    run = fit(config, lambda event: None)
    written = export_run(run, ("safetensors",))
    best = run / "checkpoints" / "best.pt"
    state = ckpt.load_checkpoint(best)
    state["model"] = {key: value + 1.0 for key, value in state["model"].items()}  # "a newer best epoch"
    staged = tmp_path / "newer.pt"
    torch.save(state, staged)
    best.unlink()  # best.pt may be a hard link to last.pt; replace it, as the keeper does
    shutil.move(staged, best)
    stale, _ = verify_run_export(run, ("safetensors",))
    assert not stale[0].passed  # re-reading the checkpoint compares with other weights
    results, _ = verify_run_export(run, ("safetensors",), reference=written.model)
    assert results[0].passed and results[0].max_abs_diff == 0.0


# ---- issue 21: an export touches only the bundle's own files; any network that trains exports ----


def _quick_run(tmp_path, arch: str = "linear"):
    from tests.support.folders import folder_config, image_folder

    dataset = image_folder(tmp_path / "animals")
    return fit(folder_config(tmp_path, dataset, arch=arch), lambda event: None)


def test_export_keeps_user_files_in_the_export_folder(tmp_path):
    run = _quick_run(tmp_path)
    export = run / "export"
    export.mkdir(exist_ok=True)
    (export / "NOTES.md").write_text("notes\n")
    (export / "plots").mkdir()
    (export / "plots" / "mine.png").write_bytes(b"png")
    (export / "model.pt2").write_bytes(b"an old bundle's program")  # a bundle name: replaced or removed
    for _ in range(2):  # the second export replaces the first one's files
        assert main(["export", str(run)]) == 0
    assert (export / "NOTES.md").read_text() == "notes\n"
    assert (export / "plots" / "mine.png").read_bytes() == b"png"
    assert not (export / "model.pt2").exists()
    assert sorted(p.name for p in export.iterdir()) == ["NOTES.md", "model.json", "model.safetensors", "plots"]
    assert not list(run.glob(".export-*"))
    load_bundle(export)


NETWORKS = '''\
import torch
import torch.nn as nn


class Extra(nn.Module):
    def __init__(self, channels, classes, size, note):
        super().__init__()
        self.fc = nn.Linear(channels * size * size, classes)
        self.note = note

    def forward(self, x):
        return self.fc(x.flatten(1))

    def get_extra_state(self):
        return self.note

    def set_extra_state(self, state):
        self.note = state


def extra(c, n, size):
    return Extra(c, n, size, {"version": 2, "labels": ["a", "b"]})


def extra_object(c, n, size):
    return Extra(c, n, size, {1, 2})  # a set: JSON cannot hold it


class Tied(nn.Module):
    def __init__(self, c, n, size):
        super().__init__()
        self.a = nn.Linear(c * size * size, n)
        self.b = nn.Linear(c * size * size, n)
        self.b.weight = self.a.weight
        self.register_buffer("transposed", torch.randn(6, 4).t())  # not contiguous
        self.register_buffer("steps", torch.zeros(3, dtype=torch.int16))
        self.register_buffer("flags", torch.ones(3, dtype=torch.bool))
        self.register_buffer("wide", torch.ones(3, dtype=torch.float64))

    def forward(self, x):
        x = x.flatten(1)
        return self.a(x) + self.b(x) + self.transposed.sum() * 0


def tied(c, n, size):
    return Tied(c, n, size)


class Made(nn.Module):
    def __init__(self, c, n, size):
        super().__init__()
        self.fc = nn.utils.parametrizations.weight_norm(nn.Linear(c * size * size, n))
        self.register_buffer("scale", torch.full((n,), 2.0), persistent=False)  # never saved

    def forward(self, x):
        return self.fc(x.flatten(1)) * self.scale


def made(c, n, size):
    return Made(c, n, size)


class Named(nn.Module):
    def __init__(self, c, n, size):
        super().__init__()
        self.heads = nn.ModuleDict({"a,b": nn.Linear(c * size * size, n)})  # a name torch.export cannot read back

    def forward(self, x):
        return self.heads["a,b"](x.flatten(1))


def comma_named(c, n, size):
    return Named(c, n, size)


class Brain(nn.Module):
    def __init__(self, c, n, size):
        super().__init__()
        self.fc = nn.Linear(c * size * size, n).to(torch.bfloat16)  # onnxruntime has no bfloat16 Gemm

    def forward(self, x):
        return self.fc(x.flatten(1).to(torch.bfloat16)).float()


def bfloat16_linear(c, n, size):
    return Brain(c, n, size)


class Eight(nn.Module):
    def __init__(self, c, n, size):
        super().__init__()
        self.fc = nn.Linear(c * size * size, n)
        self.register_buffer("table", torch.zeros(4).to(torch.float8_e4m3fn))  # isfinite has no float8 kernel

    def forward(self, x):
        return self.fc(x.flatten(1))


def float8_buffer(c, n, size):
    return Eight(c, n, size)
'''


@pytest.mark.parametrize("factory", ["extra", "tied", "made"])
def test_export_of_any_network_that_trains_loads_and_predicts_the_same(tmp_path, factory):
    (tmp_path / "nets.py").write_text(NETWORKS)
    run = _quick_run(tmp_path, f"{tmp_path / 'nets.py'}:{factory}")
    assert main(["export", str(run)]) == 0
    model, _, _ = model_from_checkpoint(run)
    loaded, meta = load_bundle(run / "export", trust_code=True)
    images = torch.rand(3, 3, 8, 8)
    assert torch.allclose(model(images), loaded(images), atol=1e-6)
    if factory == "extra":
        assert meta["extra_state"] == {"_extra_state": {"version": 2, "labels": ["a", "b"]}}
        assert loaded.note == {"version": 2, "labels": ["a", "b"]}


@pytest.mark.parametrize("factory, format, words", [
    ("comma_named", "pt2", "torch.export cannot export this network"),
    ("bfloat16_linear", "onnx", "the ONNX exporter cannot export this network"),
])
def test_export_refuses_a_format_whose_file_would_not_load_before_writing(tmp_path, capsys, factory, format, words):
    (tmp_path / "nets.py").write_text(NETWORKS)
    run = _quick_run(tmp_path, f"{tmp_path / 'nets.py'}:{factory}")
    assert main(["export", str(run)]) == 0  # the weights alone export
    before = snapshot(run / "export")
    capsys.readouterr()
    error = one_line_error(capsys, ["export", str(run), "--format", f"safetensors,{format}", "--verify"])
    assert words in error and f"leave {format} out of --format" in error
    assert snapshot(run / "export") == before  # nothing was written


def test_a_float8_buffer_trains_checkpoints_and_exports(tmp_path):
    (tmp_path / "nets.py").write_text(NETWORKS)
    run = _quick_run(tmp_path, f"{tmp_path / 'nets.py'}:float8_buffer")
    assert runs.read_status(run)[0] == "finished" and (run / "checkpoints" / "last.pt").is_file()
    assert main(["export", str(run)]) == 0


def test_numbers_from_files_export_refuses_a_run_json_predict_would_refuse_before_writing(finished_run, capsys):
    run_dir, _ = finished_run
    assert main(["export", str(run_dir)]) == 0
    capsys.readouterr()
    bundle = snapshot(run_dir / "export")
    info = json.loads((run_dir / "run.json").read_text())
    for key, value, words in (("std", [0, 0, 0], "std must be positive"), ("mean", [float("nan")] * 3, "mean must be"),
                              ("classes", list(range(4)), "classes must be a list of names"),
                              ("image_size", "16", "image_size must be a positive whole number"),
                              ("model_options", [1], "model_options must be an object")):
        (run_dir / "run.json").write_text(json.dumps({**info, key: value}))
        error = one_line_error(capsys, ["export", str(run_dir)])
        assert "run.json cannot make a bundle: " in error and words in error and "nothing was written" in error
        assert snapshot(run_dir / "export") == bundle  # the good bundle is still there


def test_export_refuses_extra_state_json_cannot_hold_in_one_line_before_writing(tmp_path, capsys):
    from tests.support.cli import one_line_error
    from tests.support.folders import snapshot

    (tmp_path / "nets.py").write_text(NETWORKS)
    run = _quick_run(tmp_path, f"{tmp_path / 'nets.py'}:extra_object")
    before = snapshot(run)
    error = one_line_error(capsys, ["export", str(run)])
    assert "_extra_state" in error and "get_extra_state" in error and "nothing was written" in error
    assert snapshot(run) == before and not list(run.glob(".export-*"))


@pytest.mark.parametrize("dtype, works", [(torch.float64, True), (torch.float16, True), (torch.int8, False),
                                          (torch.bool, False)])
def test_predict_on_weights_of_an_unusual_dtype_works_or_says_so_in_one_line(tmp_path, capsys, dtype, works):
    from safetensors.torch import load_file, save_file

    from tests.support.cli import one_line_error

    run = _quick_run(tmp_path)
    assert main(["export", str(run)]) == 0
    weights_path = run / "export" / "model.safetensors"
    save_file({key: tensor.to(dtype) for key, tensor in load_file(str(weights_path)).items()}, str(weights_path))
    image = next((tmp_path / "animals" / "test" / "ant").iterdir())
    capsys.readouterr()
    if works:
        assert main(["predict", str(run / "export"), str(image)]) == 0
        assert "ant" in capsys.readouterr().out
    else:
        error = one_line_error(capsys, ["predict", str(run / "export"), str(image)])
        assert str(dtype).removeprefix("torch.") in error and "do not fit" in error


def test_predict_on_float64_weights_of_a_batchnorm_network(run_dir, tmp_path, capsys):
    import shutil

    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file, save_file

    export_run(run_dir)
    bundle = shutil.copytree(run_dir / "export", tmp_path / "bundle")
    weights = load_file(str(bundle / "model.safetensors"))
    assert any(key.endswith("num_batches_tracked") for key in weights)  # an integer buffer, saved as float64 below
    save_file({key: tensor.to(torch.float64) for key, tensor in weights.items()}, str(bundle / "model.safetensors"))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "image.png")
    capsys.readouterr()
    assert main(["predict", str(bundle), str(tmp_path / "image.png")]) == 0
    assert "%" in capsys.readouterr().out


def test_predict_bounds_monte_carlo_passes_in_one_line(run_dir, tmp_path, capsys):
    from tests.support.cli import one_line_error

    export_run(run_dir)
    error = one_line_error(capsys, ["predict", str(run_dir / "export"), "missing.png", "--mc-dropout", "100000000"])
    assert "--mc-dropout" in error and "10,000" in error


def test_a_new_export_replaces_the_whole_bundle_and_a_failed_one_writes_nothing(finished_run, tmp_path, monkeypatch):

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

    hide_onnx(monkeypatch)
    with pytest.raises(WorkbenchError, match="nothing was exported"):
        export_run(run_dir, ("safetensors", "pt2", "onnx"))
    assert snapshot(run_dir) == before
    assert not list(run_dir.glob(".export-*"))


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


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda meta, weights: meta.update(arch=["linear"]), "is not an architecture"),
        (lambda meta, weights: meta["preprocessing"].update(std=[1e-320, 1, 1]), "std must be positive"),
        (lambda meta, weights: weights.update({k: v.half() for k, v in weights.items()}), None),
        (lambda meta, weights: weights.update({k: torch.full_like(v, float("nan")) for k, v in weights.items()}),
         "not all finite"),
        (lambda meta, weights: meta.update(format_version=99), "format_version 99 is not one this workbench reads"),
        (lambda meta, weights: meta.update(format_version="2"), "format_version '2' is not one"),
        (lambda meta, weights: meta["preprocessing"].update(color="CMYK"), "color 'CMYK' does not match in_channels"),
        (lambda meta, weights: meta.update(image_size=10**6), "image_size 1000000 is above --image-size's most"),
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


def test_onnx_verification_without_its_runtime_writes_nothing(finished_run, monkeypatch, capsys):
    run_dir, _ = finished_run
    hide_onnx(monkeypatch, "onnxruntime")  # onnx and onnxscript are there: export alone would work
    before = snapshot(run_dir)
    assert "onnxruntime" in one_line_error(capsys, ["export", str(run_dir), "--format", "onnx", "--verify"])
    assert snapshot(run_dir) == before


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


def test_exporting_a_run_stopped_inside_an_epoch_says_where_it_stopped(tiny):
    from workbench.core import checkpoint as ckpt
    from workbench.core.events import StepMetrics
    from workbench.core.training.control import TrainControl

    control = TrainControl()

    def stop_in_epoch_two(event):
        if isinstance(event, StepMetrics) and event.epoch == 2:
            control.stop()

    run_dir = fit(tiny(epochs=3, arch="convbn", image_size=12, batch_size=256, val_fraction=0), stop_in_epoch_two,
                  control)
    progress = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["progress"]
    assert progress["epoch"] == 1 and progress["epoch_step"] > 0
    said = []
    export_run(run_dir, log=said.append)
    assert f"step {progress['epoch_step']} of epoch 2, where the run stopped" in said[0], said
    assert "where the run stopped" in json.loads((run_dir / "export" / "model.json").read_text())["chosen_by"]


def test_predict_says_when_the_bundle_is_older_than_the_runs_model(tmp_path, capsys):
    dataset = image_folder(tmp_path / "animals")
    config = folder_config(tmp_path, dataset)
    run_dir = fit(config, lambda event: None)
    assert main(["export", str(run_dir), "--checkpoint", "last"]) == 0
    image = next((dataset / "test" / "ant").iterdir())
    capsys.readouterr()
    assert main(["predict", str(run_dir / "export"), str(image)]) == 0
    assert "warning" not in capsys.readouterr().err  # up to date: nothing to say
    from workbench.ui.screens.runs import read_run_details  # the app's run screen says the same

    assert "export/ holds epoch 1 (last), up to date" in read_run_details(run_dir).summary
    fit(config.replace(epochs=2), lambda event: None, resume_dir=run_dir)
    assert main(["predict", str(run_dir), str(image)]) == 0
    err = capsys.readouterr().err
    assert "holds epoch 1 (last when it was exported); the run's last is now epoch 2" in err and "workbench export" in err
    assert "export/ is out of date: this bundle holds epoch 1" in read_run_details(run_dir).summary


def test_predict_takes_folders_and_globs_skips_what_it_cannot_read_and_runs_every_format(run_dir, tmp_path, capsys):
    from PIL import Image

    export_run(run_dir, ("safetensors", "pt2", "onnx"))  # other tests of the module export safetensors alone
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for name in ("a.png", "b.jpg", "more/c.png"):
        pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=generator).numpy()
        Image.fromarray(pixels).save(photos / name)
    (photos / "broken.png").write_bytes(b"not an image")
    (photos / "notes.txt").write_text("not an image either")  # not an image extension: never tried
    export = run_dir / "export"
    csv_file, json_file = tmp_path / "out.csv", tmp_path / "out.json"
    assert main(["predict", str(export), str(photos / "more"), str(photos / "*.png"), str(photos / "b.jpg"),
                 str(tmp_path / "gone.png"), "--top", "2", "--csv", str(csv_file), "--json", str(json_file)]) == 0
    out, err = capsys.readouterr()
    assert f"skipped {photos / 'broken.png'}: cannot be read as an image" in err
    assert f"skipped {tmp_path / 'gone.png'}: does not exist" in err and "classified 3 images; skipped 2" in err
    shown = json.loads(json_file.read_text())
    assert [p["path"] for p in shown["predictions"]] == [str(photos / n) for n in ("more/c.png", "a.png", "b.jpg")]
    assert len(csv_file.read_text().splitlines()) == 1 + 3 * 2  # a header, then 2 ranked classes per image
    assert str(photos / "a.png") in out
    by_format = {}
    for model_format in ("pt2", "onnx"):
        assert main(["predict", str(export / f"model.{model_format}"), str(photos / "a.png"), str(photos / "b.jpg"),
                     "--json", "-"]) == 0
        by_format[model_format] = json.loads(capsys.readouterr().out)
        assert by_format[model_format]["format"] == model_format
    for model_format, result in by_format.items():
        for mine, theirs in zip(result["predictions"], shown["predictions"][1:]):
            assert mine["top"][0]["class"] == theirs["top"][0]["class"]
            assert abs(mine["top"][0]["probability"] - theirs["top"][0]["probability"]) < 1e-4
    line = one_line_error(capsys, ["predict", str(export), str(photos / "notes.txt"), str(tmp_path / "none-*.png")])
    assert "no image could be classified" in line and "no file matches this pattern" in line
