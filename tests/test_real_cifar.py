"""Opt-in (pytest -m cifar): one epoch of basic_cnn on the real CIFAR-10 JPEGs in ../shared/data."""

from __future__ import annotations

import tarfile

import pytest

from tests.support.cli import REPO
from workbench.core.events import EpochMetrics, Finished

SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"

pytestmark = [
    pytest.mark.cifar,
    pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="../shared/data/cifar10-jpg.tar.gz is absent"),
]


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    with tarfile.open(SHARED_CIFAR) as archive:
        archive.extractall(root, filter="data")
    return root / "cifar10"


def test_basic_cnn_one_epoch_beats_forty_percent(cifar_folder, tiny, recorder):
    config = tiny(dataset=str(cifar_folder), arch="basic_cnn", epochs=1, batch_size=32,
                  optimizer="adam", lr=0.003, schedule="constant", augment="none", weight_decay=0)
    from workbench.core.training.engine import fit

    fit(config, recorder)
    assert recorder.last(Finished) is not None, recorder.events[-1]
    (epoch,) = recorder.of(EpochMetrics)
    print(f"CIFAR-10 basic_cnn 1 epoch: test acc {epoch.test_acc:.2%}, "
          f"{epoch.images_per_s:,.0f} img/s, epoch {epoch.epoch_s:.1f} s")
    assert epoch.test_acc > 0.40
