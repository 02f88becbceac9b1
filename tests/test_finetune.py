"""Starting from trained weights: torchvision's networks (weights the tests write into a temporary
torch hub cache, never downloaded), --weights FILE, --init-from RUN, and the finetune recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.support.cli import one_line_error, run_here
from tests.support.folders import folder_config, image_folder
from workbench.core import checkpoint as ckpt
from workbench.core import runs
from workbench.core.training.engine import fit

IMAGENET_MEAN = [0.485, 0.456, 0.406]


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache in which downloading always fails, as on a machine offline."""
    import torch.hub

    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(url, dst, *args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return home / "hub" / "checkpoints"


def cached_weights(hub: Path, arch: str) -> dict[str, torch.Tensor]:
    """ImageNet-shaped weights for `arch` (random, seeded) where torchvision's file would be."""
    import torchvision.models

    from workbench.core.models.pretrained import weights_file

    torch.manual_seed(1)
    state = torchvision.models.get_model(arch.removeprefix("tv:"), weights=None).state_dict()
    # torchvision's files predate BatchNorm's step counter: they have none
    state = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    hub.mkdir(parents=True, exist_ok=True)
    torch.save(state, weights_file(arch))
    return state


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def photos(tmp_path: Path, classes=("cat", "dog")) -> Path:
    return image_folder(tmp_path / "photos", classes=classes, per_class=8, size=20)


@pytest.mark.parametrize("arch, head", [("tv:resnet18", "fc."), ("tv:mobilenet_v3_small", "classifier.3.")])
def test_a_torchvision_network_starts_from_its_cached_weights_and_phase_one_trains_only_the_head(
        arch, head, hub, tmp_path):
    imagenet = cached_weights(hub, arch)
    config = folder_config(tmp_path, photos(tmp_path), arch=arch, recipe="finetune", image_size=32, freeze_epochs=1,
                           optimizer="adamw", weight_decay=0.05)
    events = []
    run_dir = fit(config, events.append)
    assert runs.read_status(run_dir)[0] == "finished"
    after = last_weights(run_dir)
    backbone = [key for key in imagenet if not key.startswith(head)]
    for key in backbone:  # frozen through phase 1: weights and BatchNorm statistics as the file has them
        assert torch.equal(after[key], imagenet[key]), key
    warnings = [event.message for event in events if type(event).__name__ == "Notice" and event.level == "warning"]
    assert any("initial statistics" in text and "--batchnorm train" in text for text in warnings)  # random stand-ins
    assert after[head + "weight"].shape[0] == 2 and not torch.equal(after[head + "weight"], imagenet[head + "weight"][:2])
    info = runs.read_run_info(run_dir)
    start = info["start"]
    assert start["kind"] == "pretrained" and "IMAGENET1K" in start["source"] and len(start["sha256"]) == 64
    assert set(start["new"]) == {head + "weight", head + "bias"} and not start["skipped"]
    assert info["mean"] == IMAGENET_MEAN and info["resize"] == "crop"  # the weights' preprocessing
    config_saved = runs.read_config(run_dir)
    assert (config_saved.normalize, config_saved.resize, config_saved.image_size) == ("weights", "crop", 32)


def test_after_the_head_only_phase_every_layer_trains_and_batchnorm_keeps_its_statistics(hub, tmp_path):
    imagenet = cached_weights(hub, "tv:resnet18")
    config = folder_config(tmp_path, photos(tmp_path), arch="tv:resnet18", recipe="finetune", image_size=32,
                           epochs=2, freeze_epochs=1)
    events = []
    run_dir = fit(config, events.append)
    after = last_weights(run_dir)
    assert not torch.equal(after["conv1.weight"], imagenet["conv1.weight"])  # phase 2 trained the backbone
    assert torch.equal(after["bn1.running_mean"], imagenet["bn1.running_mean"])  # --batchnorm frozen
    phases = [(event.epoch, event.phase) for event in events if type(event).__name__ == "PhaseChanged"]
    assert [epoch for epoch, _ in phases] == [1, 2]
    assert "head only" in phases[0][1] and "every layer" in phases[1][1] and "0.1 x" in phases[1][1]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows if row["type"] == "phase"] == [1, 2]  # the dashboard's rows


def test_the_backbone_learns_at_its_share_of_the_rate(hub, tmp_path):
    from workbench.core.training.recipes import FinetuneRecipe

    cached_weights(hub, "tv:resnet18")
    config = folder_config(tmp_path, photos(tmp_path), arch="tv:resnet18", recipe="finetune", image_size=32,
                           lr=0.01, backbone_lr_mult=0.25)
    from workbench.core import models

    model = models.create("tv:resnet18", 3, 2, 32)
    parts = FinetuneRecipe().build(model, config, torch.device("cpu"), steps_per_epoch=4, batch_size=8, done_steps=0)
    rates = {id(param): group["lr"] for group in parts.optimizer.param_groups for param in group["params"]}
    assert rates[id(model.fc.weight)] == pytest.approx(0.01 * parts.scheduler.lr_lambdas[0](0))
    assert rates[id(model.conv1.weight)] == pytest.approx(0.25 * rates[id(model.fc.weight)])
    assert len(rates) == len(list(model.parameters()))  # frozen or not, every parameter is in the optimizer


def test_offline_without_the_file_is_one_sentence_naming_it_and_its_folder(hub, tmp_path, capsys):
    dataset = photos(tmp_path)
    error = one_line_error(capsys, ["train", "--dataset", str(dataset), "--arch", "tv:resnet18",
                                    "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"])
    assert "resnet18-f37072fd.pth" in error and str(hub) in error and "--weights" in error
    assert not (tmp_path / "runs").exists()


def test_weights_from_a_file_of_the_same_network(tmp_path):
    from safetensors.torch import save_file

    from workbench.core import models

    torch.manual_seed(5)
    state = {key: value.contiguous() for key, value in models.create("basic_cnn", 3, 2, 16).state_dict().items()}
    file = tmp_path / "mine.safetensors"
    save_file(state, file)
    config = folder_config(tmp_path, photos(tmp_path), arch="basic_cnn", image_size=16, weights=str(file), lr=1e-9,
                           optimizer="sgd", momentum=0)
    run_dir = fit(config, lambda event: None)
    start = runs.read_run_info(run_dir)["start"]
    assert start["kind"] == "file" and start["loaded"] == list(state) and not start["new"]
    import hashlib

    assert start["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    after = last_weights(run_dir)
    assert all(torch.allclose(after[key], state[key], atol=1e-6) for key in state)  # lr 1e-9: still the file's
    assert runs.read_config(run_dir).normalize == "train"  # a plain file says nothing of its preprocessing


def test_init_from_a_run_with_the_same_classes_and_with_other_classes(tmp_path, capsys):
    first = fit(folder_config(tmp_path, image_folder(tmp_path / "animals"), arch="basic_cnn", image_size=16, epochs=2),
                lambda event: None)
    source = ckpt.load_checkpoint(first / "checkpoints" / "best.pt")["model"]
    same = fit(folder_config(tmp_path, tmp_path / "animals", arch="basic_cnn", image_size=0, init_from=str(first),
                             lr=1e-9, optimizer="sgd", momentum=0), lambda event: None)
    record = runs.read_run_info(same)["start"]
    assert record["kind"] == "run" and record["source"].endswith("(best.pt)") and not record["new"]
    assert runs.read_config(same).image_size == 16  # the size the starting run trained at
    assert runs.read_run_info(same)["mean"] == runs.read_run_info(first)["mean"]  # and its normalisation
    after = last_weights(same)  # lr 1e-9: still the best epoch's weights of the first run
    assert all(torch.allclose(after[key].float(), source[key].float(), atol=1e-6) for key in source)

    other = fit(folder_config(tmp_path, photos(tmp_path, ("owl", "elk", "fox", "yak")), arch="basic_cnn", image_size=0,
                              recipe="finetune", init_from=f"{first}:last"), lambda event: None)
    record = runs.read_run_info(other)["start"]
    assert record["source"].endswith("(last.pt)") and sorted(record["new"]) == ["11.bias", "11.weight"]
    assert "3 there, 4 here" in record["new"]["11.bias"]
    log = run_here("runs", "--runs-dir", tmp_path / "runs")
    assert log.returncode == 0

    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    error = one_line_error(capsys, ["train", "--dataset", str(tmp_path / "animals"), "--arch", "convbn",
                                    "--init-from", str(first), "--runs-dir", str(tmp_path / "runs")])
    assert "trained basic_cnn, not convbn" in error
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before  # refused before a run folder


def test_finetune_needs_trained_weights_and_says_so(tmp_path, capsys):
    error = one_line_error(capsys, ["train", "--dataset", str(photos(tmp_path)), "--arch", "basic_cnn",
                                    "--recipe", "finetune", "--runs-dir", str(tmp_path / "runs")])
    assert "starts from trained weights" in error and not (tmp_path / "runs").exists()


def test_a_finetune_run_resumes_in_its_phase_and_exports_with_the_weights_preprocessing(hub, tmp_path, capsys):
    from PIL import Image

    from workbench.cli import main
    from workbench.core.export.bundle import model_from_checkpoint
    from workbench.core.export.predict import load_images
    from workbench.core.inspection.predictions import normalize

    cached_weights(hub, "tv:resnet18")
    config = folder_config(tmp_path, photos(tmp_path), arch="tv:resnet18", recipe="finetune", image_size=32,
                           epochs=1, freeze_epochs=1)
    run_dir = fit(config, lambda event: None)
    events = []
    fit(config.replace(epochs=2), events.append, resume_dir=run_dir)
    assert runs.read_status(run_dir)[0] == "finished"
    assert [e.phase.split(" (")[0] for e in events if type(e).__name__ == "PhaseChanged"] == ["every layer"]
    assert runs.read_run_info(run_dir)["start"]["kind"] == "pretrained"  # the record survives the resume

    assert main(["export", str(run_dir), "--format", "safetensors"]) == 0
    bundle = json.loads((run_dir / "export" / "model.json").read_text())
    assert bundle["preprocessing"]["mean"] == IMAGENET_MEAN and bundle["preprocessing"]["resize_mode"] == "crop"
    wide = tmp_path / "wide.png"
    Image.new("RGB", (60, 30), (200, 40, 40)).save(wide)
    capsys.readouterr()
    assert main(["predict", str(run_dir / "export"), str(wide), "--top", "1"]) == 0
    percent, name = capsys.readouterr().out.splitlines()[-1].strip().split("%", 1)
    model, _, info = model_from_checkpoint(run_dir)
    with torch.inference_mode():  # the centre square, at 32 px, with ImageNet's mean and std
        probs = model(normalize(load_images([str(wide)], 32, 3, "crop"), IMAGENET_MEAN, info["std"])).softmax(1)[0]
    assert name.strip() == info["classes"][int(probs.argmax())]
    assert float(percent) == pytest.approx(100 * float(probs.max()), abs=0.01)


# ---- bad starting points: one line, exit 2, nothing written (the hostile pass's cases) ----------


def test_the_same_number_of_other_classes_gets_a_new_head(tmp_path):
    first = fit(folder_config(tmp_path, image_folder(tmp_path / "a", classes=("cat", "dog")), arch="basic_cnn",
                              image_size=16), lambda event: None)
    second = fit(folder_config(tmp_path, image_folder(tmp_path / "b", classes=("dog", "zebra")), arch="basic_cnn",
                               image_size=0, init_from=str(first)), lambda event: None)
    new = runs.read_run_info(second)["start"]["new"]
    assert sorted(new) == ["11.bias", "11.weight"] and "[cat, dog] there, [dog, zebra] here" in new["11.weight"]


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    from workbench.core import models

    class Payload:
        def __reduce__(self):
            return (print, ("this would have run",))

    state = models.create("basic_cnn", 3, 3, 16).state_dict()
    files = {}
    files["code"] = tmp_path / "code.pt"
    torch.save({"w": Payload()}, files["code"])  # torch.save pickles the object: loading it would call print
    files["garbage"] = tmp_path / "garbage.pth"
    files["garbage"].write_bytes(b"\x00not weights at all" * 50)
    files["nan"] = tmp_path / "nan.pt"
    torch.save({key: torch.full_like(value, float("nan")) if value.is_floating_point() else value
                for key, value in state.items()}, files["nan"])
    files["ints"] = tmp_path / "ints.pt"
    torch.save({key: value.to(torch.int32) for key, value in state.items()}, files["ints"])
    return {"code": (files["code"], "holds Python objects"), "garbage": (files["garbage"], "not a weights file"),
            "nan": (files["nan"], "not finite"), "ints": (files["ints"], "int32 values")}


def test_weights_files_that_are_not_weights_are_refused_in_one_line_before_a_run_folder(tmp_path, capsys):
    dataset = photos(tmp_path)
    for name, (file, words) in _bad_files(tmp_path).items():
        error = one_line_error(capsys, ["train", "--dataset", str(dataset), "--arch", "basic_cnn", "--image-size", "16",
                                        "--weights", str(file), "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"])
        assert words in error, (name, error)
        assert "Weights only load failed" not in error and not list((tmp_path / "runs").glob("*")), name


def test_a_safetensors_file_is_known_by_its_header_whatever_its_name(tmp_path):
    from safetensors.torch import save_file

    from workbench.core import models
    from workbench.core.training.start import read_weights

    state = {key: value.contiguous() for key, value in models.create("basic_cnn", 3, 2, 16).state_dict().items()}
    misnamed = tmp_path / "weights.pt"
    save_file(state, misnamed)
    assert sorted(read_weights(misnamed)) == sorted(state)


def test_a_hand_edited_source_run_json_is_named_not_blamed_on_flags(tmp_path, capsys):
    first = fit(folder_config(tmp_path, photos(tmp_path), arch="basic_cnn", image_size=16), lambda event: None)
    info = json.loads((first / "run.json").read_text())
    for key, value, words in (("mean", ["a", "b", "c"], "mean and std"), ("std", [0, 0, 0], "std"),
                              ("image_size", True, "image_size")):
        (first / "run.json").write_text(json.dumps({**info, key: value}))
        error = one_line_error(capsys, ["train", "--dataset", str(tmp_path / "photos"), "--arch", "basic_cnn",
                                        "--init-from", str(first), "--runs-dir", str(tmp_path / "new")])
        assert str(first / "run.json") in error and words in error and not (tmp_path / "new").exists()


def test_a_resume_keeps_where_the_run_started_and_head_only_cannot_outlast_the_run(tmp_path, capsys):
    first = fit(folder_config(tmp_path, photos(tmp_path), arch="basic_cnn", image_size=16), lambda event: None)
    error = one_line_error(capsys, ["train", "--resume", str(first), "--epochs", "2", "--weights", str(tmp_path / "x.pt")])
    assert "--weights" in error
    assert "weights = \"\"" in (first / "config.toml").read_text()  # nothing recorded
    error = one_line_error(capsys, ["train", "--dataset", str(tmp_path / "photos"), "--arch", "basic_cnn",
                                    "--init-from", str(first), "--recipe", "finetune", "--freeze-epochs", "3",
                                    "--epochs", "2", "--runs-dir", str(tmp_path / "new")])
    assert "--freeze-epochs: 3 is more than the run's 2 epochs" in error


def test_queue_add_and_sweep_refuse_a_starting_point_train_would_refuse(tmp_path, capsys):
    dataset = str(photos(tmp_path))
    missing = str(tmp_path / "missing.pt")
    error = one_line_error(capsys, ["queue", "add", "--dataset", dataset, "--arch", "basic_cnn", "--weights", missing,
                                    "--runs-dir", str(tmp_path / "runs")])
    assert "missing.pt does not exist" in error and not (tmp_path / "runs").exists()
    error = one_line_error(capsys, ["sweep", "--dataset", dataset, "--arch", "basic_cnn", "--lr", "0.1,0.01",
                                    "--weights", missing, "--runs-dir", str(tmp_path / "runs")])
    assert "missing.pt does not exist" in error and not (tmp_path / "runs").exists()
