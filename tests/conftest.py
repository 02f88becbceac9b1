"""Shared fixtures: isolated data and runs folders, tiny configs, event recording."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


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


class Recorder:
    """An event sink that keeps every event, for assertions."""

    def __init__(self) -> None:
        self.events = []

    def __call__(self, event) -> None:
        self.events.append(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    def last(self, kind):
        found = self.of(kind)
        return found[-1] if found else None


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
