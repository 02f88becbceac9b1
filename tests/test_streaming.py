"""Folders over the memory limit stream from their files and train like in-memory ones."""

from __future__ import annotations

import torch

from tests.test_faults import make_folder
from workbench.core.data.load import load_dataset
from workbench.core.data.streaming import FileImages
from workbench.core.events import Finished, Notice
from workbench.core.training.batches import DeviceBatches, StreamingBatches, batches_for
from workbench.core.training.engine import fit


def test_streaming_and_resident_batches_cover_the_same_images(tmp_path):
    folder = make_folder(tmp_path / "folder", bad=False)
    resident = load_dataset(str(folder), data_dir=tmp_path / "d")
    streamed = load_dataset(str(folder), data_dir=tmp_path / "d", stream_over_mb=1e-6)
    assert isinstance(streamed.train.images, FileImages)
    assert torch.equal(streamed.train.images[torch.arange(3)], resident.train.images[:3])
    assert torch.equal(streamed.test.images[:2], resident.test.images[:2])

    cpu = torch.device("cpu")
    options = dict(shuffle=True, seed=5)
    a = batches_for(resident.train.images, resident.train.labels, resident.mean, resident.std, cpu, 5, **options)
    b = batches_for(streamed.train.images, streamed.train.labels, resident.mean, resident.std, cpu, 5, workers=1, **options)
    assert type(a) is DeviceBatches and type(b) is StreamingBatches
    assert len(a) == len(b) == 24 // 5
    batches_a = list(a.batches(a.epoch_order()))
    batches_b = list(b.batches(b.epoch_order()))
    labels_a = torch.cat([x.labels for x in batches_a])
    labels_b = torch.cat([x.labels for x in batches_b])
    assert torch.equal(labels_a, labels_b)  # same order: the same images in the same batches
    assert torch.equal(torch.cat([x.images for x in batches_a]), torch.cat([x.images for x in batches_b]))


def test_a_streamed_folder_trains_and_reports_bad_files(tiny, recorder, tmp_path):
    folder = make_folder(tmp_path / "folder")
    fit(tiny(dataset=str(folder), arch="linear", batch_size=4, stream_over_mb=1e-6, epochs=2), recorder)
    assert recorder.last(Finished).status == "finished"
    messages = " ".join(n.message for n in recorder.of(Notice))
    assert "streaming it from the files" in messages and "decoding workers" in messages
    assert "unreadable" in messages
