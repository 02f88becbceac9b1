"""Folders over the memory limit stream from their files and train like in-memory ones."""

from __future__ import annotations

import torch

from tests.support.cli import one_line_error
from tests.support.events import Recorder
from tests.support.folders import folder_config, image_folder, photo_folder
from workbench.core.data.load import load_dataset
from workbench.core.data.streaming import FileImages
from workbench.core.events import Finished, Notice
from workbench.core.training.batches import DeviceBatches, StreamingBatches, batches_for
from workbench.core.training.engine import fit


def test_streaming_and_resident_batches_cover_the_same_images(tmp_path):
    folder = photo_folder(tmp_path / "folder", bad=False)
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
    assert len(a) == len(b) == 5  # 24 images: four batches of 5 and one of 4, every image once
    batches_a = list(a.batches(a.epoch_order()))
    batches_b = list(b.batches(b.epoch_order()))
    labels_a = torch.cat([x.labels for x in batches_a])
    labels_b = torch.cat([x.labels for x in batches_b])
    assert torch.equal(labels_a, labels_b)  # same order: the same images in the same batches
    assert torch.equal(torch.cat([x.images for x in batches_a]), torch.cat([x.images for x in batches_b]))


def test_a_streamed_folder_trains_and_reports_bad_files(tiny, recorder, tmp_path):
    folder = photo_folder(tmp_path / "folder")
    fit(tiny(dataset=str(folder), arch="linear", batch_size=4, stream_over_mb=1e-6, epochs=2), recorder)
    assert recorder.last(Finished).status == "finished"
    messages = " ".join(n.message for n in recorder.of(Notice))
    assert "streaming it from the files" in messages and "decoding workers" in messages
    assert "unreadable" in messages


def test_streaming_skips_and_lists_the_same_unreadable_files_as_memory(tmp_path):
    from workbench.core.data.load import load_dataset

    dataset = image_folder(tmp_path / "animals")
    (dataset / "test" / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (dataset / "train" / "cow" / "empty.png").write_bytes(b"")
    memory = load_dataset(str(dataset), data_dir=tmp_path / "data", image_size=8)
    streamed = load_dataset(str(dataset), data_dir=tmp_path / "data", image_size=8, stream_over_mb=1e-6)
    assert type(streamed.train.images).__name__ == "FileImages"

    def names(lines):
        return sorted(line.split(":")[0] for line in lines)

    assert names(streamed.skipped) == names(memory.skipped) == sorted(
        [str((dataset / "test" / "bee" / "broken.png").resolve()), str((dataset / "train" / "cow" / "empty.png").resolve())]
    )
    assert (len(streamed.train), len(streamed.test)) == (len(memory.train), len(memory.test))
    recorder = Recorder()
    fit(folder_config(tmp_path, dataset, stream_over_mb=1e-6, val_fraction=0.0), recorder)
    assert recorder.last(Finished).final_test_acc is not None, recorder.events[-1]


def test_a_copied_folder_streams_with_its_own_list_of_unreadable_files(tmp_path):
    import shutil

    from workbench.core.data.load import load_dataset

    first = image_folder(tmp_path / "one" / "set")
    (first / "train" / "ant" / "bad.png").write_text("junk")
    shutil.copytree(first, tmp_path / "two" / "set", copy_function=shutil.copy2)
    second = tmp_path / "two" / "set"
    load_dataset(str(first), data_dir=tmp_path / "data", image_size=8, stream_over_mb=1e-6)
    streamed = load_dataset(str(second), data_dir=tmp_path / "data", image_size=8, stream_over_mb=1e-6)
    assert [line.split(":")[0] for line in streamed.skipped] == [str((second / "train" / "ant" / "bad.png").resolve())]


def test_streaming_refuses_a_class_without_readable_images_like_memory(tmp_path, capsys):
    dataset = image_folder(tmp_path / "animals")
    for path in (dataset / "train" / "cow").iterdir():
        path.write_text("not an image")
    args = ["train", "--dataset", str(dataset), "--arch", "linear", "--device", "cpu", "--image-size", "8",
            "--data-dir", str(tmp_path / "d"), "--runs-dir", str(tmp_path / "runs")]
    assert "has no readable images" in one_line_error(capsys, args)
    assert "has no readable images" in one_line_error(capsys, args + ["--stream-over-mb", "0.000001"])
