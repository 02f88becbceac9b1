"""Shared fixtures: isolated data and runs folders, tiny configs, event recording, runs trained once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.events import Recorder
from tests.support.folders import folder_config, image_folder, snapshot

# pytest-xdist runs a worker per core, and one more. Each worker, and every process it starts,
# computes on one thread: workers with a thread per core each oversubscribe the cores, and OpenMP
# threads spin while they wait for each other (a 20 s resume test took 330 s that way on 2 cores).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

_BYTECODE_SETTING = pytest.StashKey[tuple[str | None, bool]]()


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: without xdist, pytest would refuse it
def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker more than the cores this process may use. Many tests wait (on a child
    process importing torch, on the app drawing), and the extra worker computes meanwhile."""
    return len(os.sched_getaffinity(0)) + 1


def pytest_configure(config) -> None:
    """The suite starts about 60 `workbench` processes besides its workers (which xdist starts
    after this). Where the environment says PYTHONDONTWRITEBYTECODE, each compiled the package's
    modules again, and each worker the tests': ~40 CPU-s a run on 2 cores. Compiled files go to
    __pycache__ folders, which git ignores; the setting is put back when the session ends."""
    import sys

    config.stash[_BYTECODE_SETTING] = (os.environ.pop("PYTHONDONTWRITEBYTECODE", None), sys.dont_write_bytecode)
    sys.dont_write_bytecode = False


def pytest_unconfigure(config) -> None:
    import sys

    variable, sys.dont_write_bytecode = config.stash[_BYTECODE_SETTING]
    if variable is not None:
        os.environ["PYTHONDONTWRITEBYTECODE"] = variable


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder per test session, so the shapes cache is built once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def tiny(data_dir, runs_dir):
    """A fast CPU config on the generated shapes set; override fields with keywords."""
    from workbench.core.config import RunConfig

    def make(**changes):
        values = dict(
            dataset="shapes", arch="basic_cnn", epochs=1, batch_size=128, device="cpu",
            data_dir=str(data_dir), runs_dir=str(runs_dir), augment="flip",
        )
        values.update(changes)
        return RunConfig.from_mapping(values)

    return make


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="session")
def recorded_run(data_dir, tmp_path_factory) -> Path:
    """A finished 3-epoch run, trained for real once per session: the rows tests replay."""
    from workbench.core.config import RunConfig
    from workbench.core.training.engine import fit

    config = RunConfig.from_mapping(dict(dataset="shapes", arch="linear", epochs=3, image_size=12, device="cpu",
                                         data_dir=str(data_dir), runs_dir=str(tmp_path_factory.mktemp("recorded")),
                                         augment="flip"))
    return fit(config, lambda event: None)


@pytest.fixture(scope="session")
def trained_folder_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A finished 1-epoch run on a small image folder, trained once per session (per xdist worker).
    Tests get it through `finished_run`, which copies the run folder; the data set stays here."""
    from workbench.core import runs
    from workbench.core.training.engine import fit

    root = tmp_path_factory.mktemp("folder-run")
    dataset = image_folder(root / "animals")
    pristine = root / "animals-as-made"
    shutil.copytree(dataset, pristine)
    run_dir = fit(folder_config(root, dataset), lambda event: None)
    assert runs.read_status(run_dir)[0] == "finished"
    return run_dir, dataset, pristine


@pytest.fixture
def finished_run(trained_folder_run, tmp_path):
    """(a copy of the finished folder run in tmp_path/runs, its data set). A test may change both:
    the data set is shared by the session, so whatever a test changed in it is put back afterwards."""
    run_dir, dataset, pristine = trained_folder_run
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy, symlinks=True)
    yield copy, dataset
    if snapshot(dataset) != snapshot(pristine) or sorted(dataset.rglob("*")) != [
            dataset / p.relative_to(pristine) for p in sorted(pristine.rglob("*"))]:
        shutil.rmtree(dataset)
        shutil.copytree(pristine, dataset)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Work in tmp_path so paths on screen are short and the same on every run."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
