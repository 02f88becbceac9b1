"""Bring your own network: `--arch file.py:factory` trains, resumes, exports and predicts, and a
bad file is one line naming the file and line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.support.cli import run_here
from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.events import Failed, Finished, Notice

NETWORK = '''\
import torch.nn as nn


def make_net(in_channels, num_classes, image_size):
    return nn.Sequential(nn.Conv2d(in_channels, {width}, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear({width}, num_classes))
'''


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run_here(*args, cwd=cwd)


def test_a_network_file_trains_resumes_after_an_edit_exports_and_predicts(tmp_path, data_dir):
    from PIL import Image

    from workbench.core.data.folders import decode_image  # noqa: F401 - the test image below is decoded by predict

    _write(tmp_path, "my_nets.py", NETWORK.format(width=8))
    common = ["--device", "cpu", "--data-dir", str(data_dir)]
    trained = _cli(tmp_path, "train", "--dataset", "shapes", "--arch", "my_nets.py:make_net", "--epochs", "1",
                   "--image-size", "12", "--runs-dir", "runs", *common)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.endswith("-my_nets.make_net")
    record = json.loads((run / "network" / "network.json").read_text())
    assert record["original"] == str(tmp_path / "my_nets.py") and record["factory"] == "make_net"
    assert (run / "network" / "my_nets.py").read_text() == NETWORK.format(width=8)
    assert f'arch = "{tmp_path / "my_nets.py"}:make_net"' in (run / "config.toml").read_text()

    _write(tmp_path, "my_nets.py", NETWORK.format(width=16))  # the user edits the file
    resumed = _cli(tmp_path, "train", "--resume", str(run), "--epochs", "2", *common)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "changed since this run began; the run's copy (network/my_nets.py) is used" in resumed.stdout
    (tmp_path / "my_nets.py").unlink()  # ... then deletes it

    exported = _cli(tmp_path, "export", str(run), "--format", "safetensors,pt2", "--verify")
    assert exported.returncode == 0, exported.stderr[-2000:]
    bundle = run / "export"
    assert (bundle / "network" / "my_nets.py").read_text() == NETWORK.format(width=8)
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["network_file"]["file"] == "my_nets.py" and meta["params"] == 8 * 27 + 8 + 8 * 10 + 10

    Image.new("RGB", (12, 12), (200, 30, 30)).save(tmp_path / "red.png")
    refused = _cli(tmp_path, "predict", str(bundle), "red.png")
    assert refused.returncode == 2 and "--trust-code" in refused.stderr and "network/my_nets.py" in refused.stderr
    assert refused.stderr.count("\n") == 1
    predicted = _cli(tmp_path, "predict", str(bundle), "red.png", "--trust-code")
    assert predicted.returncode == 0 and "red.png" in predicted.stdout, predicted.stderr
    program = torch.export.load(str(bundle / "model.pt2"))  # needs no source at all
    assert program.module()(torch.zeros(1, 3, 12, 12)).shape == (1, 10)


BAD_FILES = {
    "syntax": ("def make_net(c, k, s)\n    return None\n", "line 1: syntax error"),
    "no factory": ("def other(c, k, s):\n    return None\n", "has no make_net (it defines: other)"),
    "not a module": ("def make_net(c, k, s):\n    return [c, k, s]\n", "make_net returned list, not a torch.nn.Module"),
    "raises at import": ("import torch\nraise ValueError('no GPU here')\n", "line 2: ValueError: no GPU here while loading"),
    "raises in the factory": ("def make_net(c, k, s):\n    return 1 / 0\n", "line 2: ZeroDivisionError"),
    "fails on a batch": ("import torch.nn as nn\n\ndef make_net(c, k, s):\n    return nn.Linear(7, k)\n",
                         "on a batch of 2 images of 3x12x12"),
    "wrong output": ("import torch.nn as nn\n\ndef make_net(c, k, s):\n"
                     "    return nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 3))\n",
                     "returned (2, 3) for 2 images in eval mode; it must return (2, 10) logits"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_network_file_is_one_line_naming_the_file_before_any_run_folder(case, tiny, recorder, tmp_path):
    from workbench.core.training.engine import fit

    source, expected = BAD_FILES[case]
    path = _write(tmp_path, "net.py", source)
    fit(tiny(arch=f"{path}:make_net", image_size=12), recorder)
    failed = recorder.last(Failed)
    assert failed is not None and failed.bad_input, recorder.of(Finished)
    assert str(path) in failed.reason and expected in failed.reason
    assert "\n" not in failed.reason
    assert not list((tmp_path / "runs").glob("*"))  # no run folder was made


def test_the_setting_is_checked_and_recorded_with_an_absolute_path(tmp_path, monkeypatch):
    _write(tmp_path, "nets.py", NETWORK.format(width=4))
    monkeypatch.chdir(tmp_path)
    config = RunConfig.from_mapping({"arch": "nets.py:make_net"})
    assert config.arch == f"{tmp_path / 'nets.py'}:make_net"
    toml = _write(tmp_path, "run.toml", 'arch = "nets.py:make_net"\n')
    assert RunConfig.from_toml(toml).arch == config.arch
    with pytest.raises(ConfigError) as missing:
        RunConfig.from_mapping({"arch": "gone.py:make_net"})
    assert missing.value.field == "arch" and "does not exist" in str(missing.value)
    with pytest.raises(ConfigError) as unknown:
        RunConfig.from_mapping({"arch": "nets.py"})
    assert "path/to/file.py:factory" in str(unknown.value)


def test_a_run_whose_copy_was_tampered_with_is_refused_on_resume(tiny, recorder, tmp_path):
    from workbench.core.training.engine import fit

    path = _write(tmp_path, "nets.py", NETWORK.format(width=4))
    run = fit(tiny(arch=f"{path}:make_net", image_size=12, epochs=1), recorder)
    assert recorder.last(Finished).status == "finished"
    (run / "network" / "nets.py").write_text(NETWORK.format(width=6))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    again = type(recorder)()
    fit(tiny(arch=f"{path}:make_net", image_size=12, epochs=2), again, resume_dir=run)
    assert again.last(Failed) is not None and "was changed after the run began" in again.last(Failed).reason
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # a refused resume writes nothing


def test_a_resume_with_the_original_gone_uses_the_copy_and_says_so(tiny, recorder, tmp_path):
    from workbench.core.runs import read_config
    from workbench.core.training.engine import fit

    path = _write(tmp_path, "nets.py", NETWORK.format(width=4))
    run = fit(tiny(arch=f"{path}:make_net", image_size=12, epochs=1), recorder)
    path.unlink()
    again = type(recorder)()
    fit(read_config(run, for_resume=True).replace(epochs=2), again, resume_dir=run)
    assert again.last(Finished).status == "finished"
    assert any("is gone; the run's copy (network/nets.py) is used" in n.message for n in again.of(Notice))


def test_the_models_registry_builds_and_counts_a_network_file(tmp_path):
    from workbench.core import models

    path = _write(tmp_path, "nets.py", NETWORK.format(width=4))
    arch = f"{path}:make_net"
    assert models.parameter_count(arch, 3, 10, 32) == 4 * 27 + 4 + 4 * 10 + 10
    assert models.get_spec(arch).name == "nets.make_net"
    assert not models.input_problem(arch, 3, 10, 32)
    with pytest.raises(WorkbenchError):
        models.create(f"{tmp_path / 'none.py'}:make_net")


def test_loading_a_network_file_writes_nothing_beside_it(tmp_path, monkeypatch):
    """Python caches a module it imports in __pycache__ beside it; a network file is run from its
    source, so a run folder's copy (or the user's tree) stays byte for byte as it was."""
    from tests.support.folders import snapshot
    from workbench.core import models

    monkeypatch.setattr("sys.dont_write_bytecode", False)  # Python's default, whatever this shell says
    (tmp_path / "mine").mkdir()
    path = _write(tmp_path / "mine", "nets.py", NETWORK.format(width=5))
    before = snapshot(tmp_path / "mine")
    assert models.parameter_count(f"{path}:make_net", 3, 10, 32) == 5 * 27 + 5 + 5 * 10 + 10
    assert snapshot(tmp_path / "mine") == before


def test_models_shows_a_network_file_s_layers_and_count(tmp_path, data_dir):
    _write(tmp_path, "nets.py", NETWORK.format(width=4))
    shown = _cli(tmp_path, "models", "--dataset", "shapes", "--arch", "nets.py:make_net")
    assert shown.returncode == 0, shown.stderr
    assert "nets.make_net" in shown.stdout and "Conv2d" in shown.stdout
    assert f"{4 * 27 + 4 + 4 * 10 + 10:,} parameters for 3x32x32 images" in shown.stdout
    _write(tmp_path, "broken.py", "def make_net(c, k, s):\n    return None\n")
    refused = _cli(tmp_path, "models", "--dataset", "shapes", "--arch", "broken.py:make_net")
    assert refused.returncode == 2 and "returned NoneType, not a torch.nn.Module" in refused.stderr


MORE_BAD_FILES = {
    "sys.exit in the factory": ("import sys\n\ndef make_net(c, k, s):\n    sys.exit(0)\n", "called sys.exit(0)"),
    "sys.exit at import": ("import sys\nsys.exit(3)\n", "line 2: the file called sys.exit(3) while loading"),
    "no parameters": ("import torch.nn as nn\n\ndef make_net(c, k, s):\n    return nn.Flatten()\n",
                      "the model has no trainable parameters"),
    "fails only in train mode": (
        "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, k):\n        super().__init__()\n"
        "        self.fc = nn.LazyLinear(k)\n    def forward(self, x):\n        if self.training:\n"
        "            raise RuntimeError('only in train mode')\n        return self.fc(x.flatten(1))\n\n"
        "def make_net(c, k, s):\n    return Net(k)\n", "line 9: RuntimeError: only in train mode"),
}


@pytest.mark.parametrize("case", list(MORE_BAD_FILES))
def test_exits_empty_models_and_train_mode_failures_are_refused_before_a_run_folder(case, tiny, recorder, tmp_path):
    from workbench.core.training.engine import fit

    source, expected = MORE_BAD_FILES[case]
    path = _write(tmp_path, "net.py", source)
    fit(tiny(arch=f"{path}:make_net", image_size=12), recorder)
    failed = recorder.last(Failed)
    assert failed is not None and failed.bad_input and expected in failed.reason, failed
    assert not list((tmp_path / "runs").glob("*"))


def test_the_check_leaves_batchnorm_statistics_and_the_random_state_as_they_were():
    from workbench.core.models.user_file import check_forward

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                                torch.nn.Flatten(), torch.nn.LazyLinear(10))
    model(torch.zeros(2, 3, 8, 8))  # materialise the lazy layer
    before = {name: tensor.clone() for name, tensor in model.named_buffers()}
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_forward(model, "net.py", 3, 10, 8)
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.named_buffers())
    assert model.training


def test_predict_names_the_network_file_when_its_forward_fails(tmp_path, data_dir):
    from PIL import Image

    source = ("import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, c, k, s):\n"
              "        super().__init__()\n        self.fc = nn.Linear(c * s * s, k)\n"
              "    def forward(self, x):\n        if x.shape[0] == 1:\n            raise RuntimeError('one image')\n"
              "        return self.fc(x.flatten(1))\n\ndef make_net(c, k, s):\n    return Net(c, k, s)\n")
    _write(tmp_path, "one.py", source)
    trained = _cli(tmp_path, "train", "--dataset", "shapes", "--arch", "one.py:make_net", "--epochs", "1",
                   "--image-size", "12", "--runs-dir", "runs", "--device", "cpu", "--data-dir", str(data_dir))
    assert trained.returncode == 0, trained.stderr[-1500:]
    (run,) = (tmp_path / "runs").iterdir()
    assert _cli(tmp_path, "export", str(run)).returncode == 0
    Image.new("RGB", (12, 12), (0, 0, 200)).save(tmp_path / "blue.png")
    failed = _cli(tmp_path, "predict", str(run / "export"), "blue.png", "--trust-code")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-1500:]
    assert "network/one.py line 9: RuntimeError: one image on a batch of 1 image" in failed.stderr


def test_user_network_failure_during_training_names_the_file_and_line(tmp_path):
    from workbench.core.models.user_file import build, user_code_failure

    path = _write(tmp_path, "late.py", '''\
import torch.nn as nn


class Late(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 3:
            raise RuntimeError("batch 4 went wrong")
        return self.fc(x.flatten(1))


def make(c, n, size):
    return Late()
''')
    model = build(str(path), "make", 3, 2, 8)
    for _ in range(3):
        model(torch.zeros(2, 3, 8, 8))
    try:
        model(torch.zeros(2, 3, 8, 8))
    except RuntimeError as error:
        failure = user_code_failure(error)
    assert failure is not None and str(failure) == f"{path} line 13: RuntimeError: batch 4 went wrong during training"
    assert user_code_failure(ValueError("not from the user's code")) is None
