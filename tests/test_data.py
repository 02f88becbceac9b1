"""Data loading: shapes, folders, CIFAR/MNIST from local files, caching, and safe unpickling."""

from __future__ import annotations

import os
import pickle
import re
import struct
import zlib
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.cli import one_line_error
from tests.support.folders import image_folder, wide_image
from workbench.cli import main
from workbench.core import config, runs
from workbench.core.data import folders, named_sets, shapes
from workbench.core.data.load import dataset_shape, load_dataset
from workbench.core.data.normalize import channel_stats
from workbench.core.data.safe_pickle import load_cifar_batch
from workbench.core.data.types import NAMED_SHAPES, Dataset
from workbench.core.errors import WorkbenchError

# ---- helpers -----------------------------------------------------------------------------------


def _solid(mode: str, size: tuple[int, int], colour) -> Image.Image:
    return Image.new(mode, size, colour)


def _gradient(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
    pixels = ramp + rng.integers(0, 60, (height, 1, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def _palette(size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("P", size, 1)
    image.putpalette([0, 0, 0, *colour])
    return image


def _noisy_jpeg(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)


def _train_test_folder(root: Path) -> Path:
    """cat / dog / frog in train/ and test/, with odd modes and sizes."""
    layout = {
        "train/cat/a.png": _solid("RGB", (40, 40), (200, 10, 10)),
        "train/cat/b_gray.png": _solid("L", (50, 37), 77),
        "train/cat/c.png": _gradient((64, 48), seed=1),
        "train/dog/a_rgba.png": _solid("RGBA", (13, 90), (10, 200, 30, 5)),
        "train/dog/b.jpg": _solid("RGB", (32, 32), (0, 0, 250)),
        "train/frog/a_palette.png": _palette((33, 21), (12, 34, 56)),
        "train/frog/b.bmp": _solid("RGB", (100, 100), (90, 90, 0)),
        "train/frog/c_16bit.png": Image.fromarray(np.full((20, 30), 128 * 257, dtype=np.uint16)),
        "test/cat/t.png": _solid("RGB", (32, 32), (255, 255, 255)),
        "test/dog/t.png": _solid("L", (7, 9), 3),
        "test/frog/t.png": _gradient((31, 77), seed=2),
    }
    for relative, image in layout.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / relative)
    (root / "train/cat/notes.txt").write_text("not an image")
    (root / "train/dog/.DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def _single_folder(root: Path, per_class: dict[str, int]) -> Path:
    for label, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True)
        for index in range(count):
            _solid("RGB", (8, 8), (label * 40, index * 10, 0)).save(
                root / name / f"{index:03d}.png"
            )
    return root


def _pixel(dataset_split, source_suffix: str) -> tuple[int, int, int]:
    row = next(
        i for i, source in enumerate(dataset_split.sources) if source.endswith(source_suffix)
    )
    return tuple(dataset_split.images[row, :, 16, 16].tolist())


def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every download attempt fail like a machine without network, and record it."""
    attempts: list[str] = []

    def offline(url, *args, **kwargs):
        attempts.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(named_sets, "download_and_extract_archive", offline)
    return attempts


# ---- shapes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_set(data_dir: Path) -> Dataset:
    return load_dataset("shapes", data_dir=data_dir)


def test_shapes_has_ten_balanced_classes_of_uint8_images(shapes_set: Dataset) -> None:
    assert shapes_set.train.images.shape == (10_000, 3, 32, 32)
    assert shapes_set.test.images.shape == (2_000, 3, 32, 32)
    assert shapes_set.train.images.dtype == torch.uint8 and shapes_set.train.images.is_contiguous()
    assert shapes_set.train.labels.dtype == torch.int64
    assert shapes_set.num_classes == 10 and len(set(shapes_set.classes)) == 10
    assert shapes_set.train.labels.bincount().tolist() == [1000] * 10
    assert shapes_set.test.labels.bincount().tolist() == [200] * 10
    assert shapes_set.train.sources is None and shapes_set.skipped == []
    assert (shapes_set.channels, shapes_set.image_size) == (3, 32)
    assert all(0.2 < value < 0.8 for value in shapes_set.mean)
    assert all(0.1 < value < 0.5 for value in shapes_set.std)


def test_shapes_are_the_same_every_time_and_for_every_run_seed(
    shapes_set: Dataset, data_dir: Path
) -> None:
    first_train, first_test = shapes.generate(8)
    second_train, _ = shapes.generate(8)
    assert torch.equal(first_train.images, second_train.images)
    assert torch.equal(first_train.labels, second_train.labels)
    assert first_train.images.shape == (10_000, 3, 8, 8)  # drawn at any requested size
    assert torch.equal(first_train.labels, shapes_set.train.labels)  # same scenes at every size
    assert not torch.equal(first_train.images[:2000], first_test.images)  # test is not a copy
    seeded = load_dataset("shapes", data_dir=data_dir, seed=7)
    assert torch.equal(seeded.train.images, shapes_set.train.images)


def test_shapes_images_are_not_blank_or_duplicated(shapes_set: Dataset) -> None:
    images = shapes_set.train.images[:500].flatten(1)
    assert images.float().std(dim=1).min() > 10  # every image has content
    assert len({bytes(row.numpy()) for row in images}) == 500


# ---- folders -----------------------------------------------------------------------------------


def test_train_test_folder_loads_any_mode_and_size_as_rgb(tmp_path: Path) -> None:
    root = _train_test_folder(tmp_path / "pets")
    dataset = load_dataset(str(root), data_dir=tmp_path / "data")

    assert dataset.name == str(root)
    assert dataset.classes == ["cat", "dog", "frog"]
    assert dataset.train.images.shape == (8, 3, 32, 32)
    assert dataset.test.images.shape == (3, 3, 32, 32)
    assert dataset.train.images.dtype == torch.uint8
    assert dataset.skipped == []  # notes.txt and .DS_Store are ignored, not skipped
    for split in (dataset.train, dataset.test):
        for source, label in zip(split.sources, split.labels.tolist(), strict=True):
            assert Path(source).is_file() and Path(source).parent.name == dataset.classes[label]
    assert _pixel(dataset.train, "a.png") == (200, 10, 10)
    assert _pixel(dataset.train, "b_gray.png") == (77, 77, 77)
    assert _pixel(dataset.train, "a_rgba.png") == (10, 200, 30)  # alpha dropped, not composited
    assert _pixel(dataset.train, "a_palette.png") == (12, 34, 56)
    assert _pixel(dataset.train, "c_16bit.png") == (128, 128, 128)  # scaled, not clipped
    assert _pixel(dataset.test, "dog/t.png") == (3, 3, 3)

    source = root / "train/cat/c.png"
    expected = np.asarray(Image.open(source).resize((32, 32), Image.Resampling.BICUBIC))
    row = dataset.train.sources.index(str(source))
    assert np.array_equal(dataset.train.images[row].permute(1, 2, 0).numpy(), expected)

    assert dataset.mean == pytest.approx(channel_stats(dataset.train.images)[0])
    manual = dataset.train.images.double().div(255)
    assert dataset.mean == pytest.approx(manual.mean(dim=(0, 2, 3)).tolist())
    assert dataset.std == pytest.approx(manual.std(dim=(0, 2, 3), unbiased=False).tolist())


def test_decode_image_matches_folder_decoding(tmp_path: Path) -> None:
    root = _train_test_folder(tmp_path / "pets")
    dataset = load_dataset(str(root), data_dir=tmp_path / "data")
    for row, source in enumerate(dataset.train.sources):
        assert torch.equal(folders.decode_image(Path(source), 32), dataset.train.images[row])
    gray = folders.decode_image(root / "train/cat/b_gray.png", 16, channels=1)
    assert gray.shape == (1, 16, 16) and gray.dtype == torch.uint8 and int(gray[0, 8, 8]) == 77
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises((OSError, ValueError)):
        folders.decode_image(tmp_path / "fake.png", 32)


def test_image_size_and_val_folder(tmp_path: Path) -> None:
    root = _train_test_folder(tmp_path / "pets")
    (root / "test").rename(root / "val")
    dataset = load_dataset(str(root), data_dir=tmp_path / "data", image_size=20)
    assert dataset.train.images.shape == (8, 3, 20, 20)
    assert len(dataset.test) == 3
    assert dataset_shape(str(root), 20) == (3, 20, 3)


def test_single_folder_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    root = _single_folder(tmp_path / "flat", {"a": 10, "b": 20, "c": 5})

    def split_sources(seed: int) -> tuple[list[str], list[str], Dataset]:
        dataset = load_dataset(str(root), data_dir=tmp_path / "data", seed=seed, test_fraction=0.2)
        return dataset.train.sources, dataset.test.sources, dataset

    train, test, dataset = split_sources(seed=0)
    assert dataset.test.labels.bincount().tolist() == [2, 4, 1]
    assert dataset.train.labels.bincount().tolist() == [8, 16, 4]
    assert sorted(train + test) == sorted(str(path) for path in root.rglob("*.png"))
    assert split_sources(seed=0)[:2] == (train, test)
    assert split_sources(seed=1)[1] != test
    everything = sorted(train + test)
    assert [everything[i] for i in dataset.test.indices.tolist()] == test
    assert [everything[i] for i in dataset.train.indices.tolist()] == train


def test_validation_split_is_held_out_of_train_stratified_and_seeded(tmp_path: Path) -> None:
    root = _single_folder(tmp_path / "flat", {"a": 10, "b": 20, "c": 5})
    plain = load_dataset(str(root), data_dir=tmp_path / "data", test_fraction=0.2)
    dataset = load_dataset(str(root), data_dir=tmp_path / "data", test_fraction=0.2, val_fraction=0.25)
    assert plain.val is None and dataset.val is not None
    assert dataset.val.labels.bincount().tolist() == [2, 4, 1]  # a quarter of each class of train
    assert dataset.train.labels.bincount().tolist() == [6, 12, 3]
    assert dataset.test.sources == plain.test.sources  # the test split never moves
    assert sorted(dataset.train.sources + dataset.val.sources) == sorted(plain.train.sources)
    assert dataset.mean == plain.mean and dataset.std == plain.std  # one input format whatever the fraction
    everything = sorted(str(path) for path in root.rglob("*.png"))
    assert [everything[i] for i in dataset.val.indices.tolist()] == dataset.val.sources
    again = load_dataset(str(root), data_dir=tmp_path / "data", test_fraction=0.2, val_fraction=0.25)
    other = load_dataset(str(root), data_dir=tmp_path / "data", test_fraction=0.2, val_fraction=0.25, seed=1)
    assert again.val.sources == dataset.val.sources and other.val.sources != dataset.val.sources


def test_second_load_reads_the_cache_and_a_changed_folder_is_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _train_test_folder(tmp_path / "pets")
    first = load_dataset(str(root), data_dir=tmp_path / "data")
    assert len(list((tmp_path / "data" / "cache").glob("*.safetensors"))) == 1

    def no_decoding(path, size):
        raise AssertionError(f"decoded {path} although the cache should have been used")

    messages: list[str] = []
    with monkeypatch.context() as patch:
        patch.setattr(folders, "_decode_one", no_decoding)
        second = load_dataset(str(root), data_dir=tmp_path / "data", log=messages.append)
    assert any(message.startswith("loaded cached") for message in messages)
    assert torch.equal(first.train.images, second.train.images)
    assert first.train.sources == second.train.sources and first.classes == second.classes
    assert first.mean == second.mean and first.std == second.std

    _solid("RGB", (32, 32), (1, 2, 3)).save(root / "train/dog/new.png")
    third = load_dataset(str(root), data_dir=tmp_path / "data", log=messages.append)
    assert len(third.train) == len(first.train) + 1


def test_unwritable_data_dir_only_skips_caching(tmp_path: Path) -> None:
    root = _single_folder(tmp_path / "flat", {"a": 3, "b": 3})
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where the data folder should be")
    messages: list[str] = []
    dataset = load_dataset(str(root), data_dir=not_a_folder, log=messages.append)
    assert len(dataset.train) + len(dataset.test) == 6
    assert any("not caching" in message for message in messages)


def test_unreadable_files_are_skipped_and_reported(tmp_path: Path) -> None:
    root = _train_test_folder(tmp_path / "pets")
    truncated = root / "train/cat/truncated.jpg"
    _noisy_jpeg(truncated, seed=3)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty = root / "train/dog/empty.jpg"
    empty.write_bytes(b"")
    text = root / "test/frog/text.png"
    text.write_text("this is not a PNG")

    messages: list[str] = []
    dataset = load_dataset(str(root), data_dir=tmp_path / "data", log=messages.append)
    assert (len(dataset.train), len(dataset.test)) == (8, 3)
    reasons = dict(line.split(": ", 1) for line in dataset.skipped)
    assert set(reasons) == {str(truncated), str(empty), str(text)}
    assert "truncated" in reasons[str(truncated)]
    assert reasons[str(empty)] == "empty file"
    assert all(
        str(path) not in (dataset.train.sources + dataset.test.sources)
        for path in (truncated, empty, text)
    )
    assert sum("skipping unreadable image" in message for message in messages) == 3


def test_skip_warnings_are_capped(tmp_path: Path) -> None:
    root = _single_folder(tmp_path / "flat", {"a": 4, "b": 4})
    for index in range(folders.MAX_WARNINGS + 5):
        (root / "a" / f"bad{index:02d}.png").write_text("nope")
    messages: list[str] = []
    dataset = load_dataset(str(root), data_dir=tmp_path / "data", log=messages.append)
    assert len(dataset.skipped) == folders.MAX_WARNINGS + 5
    assert (
        sum("skipping unreadable image" in message for message in messages) == folders.MAX_WARNINGS
    )
    assert any("5 more unreadable images" in message for message in messages)


def test_empty_class_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    root = _single_folder(tmp_path / "flat", {"a": 3, "b": 3})
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(WorkbenchError, match=re.escape(str(root / "empty"))):
        load_dataset(str(root), data_dir=tmp_path / "data")


def test_class_with_only_unreadable_images_is_an_error(tmp_path: Path) -> None:
    root = _single_folder(tmp_path / "flat", {"a": 3})
    (root / "broken").mkdir()
    (root / "broken" / "x.png").write_text("nope")
    with pytest.raises(WorkbenchError, match="broken has no readable images"):
        load_dataset(str(root), data_dir=tmp_path / "data")


def test_root_without_class_folders_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "loose"
    root.mkdir()
    _solid("RGB", (8, 8), (0, 0, 0)).save(root / "image.png")
    with pytest.raises(WorkbenchError, match="has no class subfolders") as raised:
        load_dataset(str(root), data_dir=tmp_path / "data")
    assert str(root) in str(raised.value) and "<class>" in str(raised.value)
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"), data_dir=tmp_path / "data")


def test_train_and_test_must_have_the_same_classes(tmp_path: Path) -> None:
    root = _train_test_folder(tmp_path / "pets")
    (root / "test/frog").rename(root / "test/toad")
    with pytest.raises(WorkbenchError) as raised:
        load_dataset(str(root), data_dir=tmp_path / "data")
    message = str(raised.value)
    assert "frog" in message and "toad" in message and "\n" not in message


# ---- CIFAR, MNIST and safe unpickling ------------------------------------------------------------


def _cifar_batch(path: Path, count: int, seed: int, label_key: bytes = b"labels") -> np.ndarray:
    data = np.random.default_rng(seed).integers(0, 256, (count, 3072), dtype=np.uint8)
    labels = [(seed + index) % 10 for index in range(count)]
    entry = {
        b"batch_label": b"fake",
        label_key: labels,
        b"data": data,
        b"filenames": [b"x.png"] * count,
    }
    path.write_bytes(pickle.dumps(entry, protocol=2))  # the protocol the real batches use
    return data


def _fake_cifar10(data_dir: Path) -> dict[str, np.ndarray]:
    batches = data_dir / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    written = {
        f"data_batch_{i}": _cifar_batch(batches / f"data_batch_{i}", 4, seed=i) for i in range(1, 6)
    }
    written["test_batch"] = _cifar_batch(batches / "test_batch", 6, seed=9)
    names = [
        name.encode()
        for name in ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    ]
    (batches / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2)
    )
    return written


def test_restricted_unpickler_loads_a_cifar_batch(tmp_path: Path) -> None:
    data = _cifar_batch(tmp_path / "data_batch_1", 5, seed=1)
    entry = load_cifar_batch(tmp_path / "data_batch_1")
    assert np.array_equal(entry[b"data"], data) and entry[b"labels"] == [1, 2, 3, 4, 5]
    (tmp_path / "protocol5").write_bytes(pickle.dumps({b"data": data}, protocol=5))
    assert np.array_equal(load_cifar_batch(tmp_path / "protocol5")[b"data"], data)


class _ShellPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_ShellPayload, _ExecPayload])
def test_restricted_unpickler_refuses_code(tmp_path: Path, payload) -> None:
    marker = tmp_path / "marker"
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": payload(marker), b"labels": []}, protocol=2))
    with pytest.raises(
        WorkbenchError, match="refusing to load .*which CIFAR batches never need"
    ) as raised:
        load_cifar_batch(evil)
    assert str(evil) in str(raised.value)
    assert not marker.exists()


def test_cifar10_loads_from_local_batches_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = _no_downloads(monkeypatch)
    written = _fake_cifar10(tmp_path)
    dataset = load_dataset("cifar10", data_dir=tmp_path)
    assert attempts == []
    assert dataset.classes[:3] == ["plane", "car", "bird"] and dataset.num_classes == 10
    assert dataset.train.images.shape == (20, 3, 32, 32) and dataset.test.images.shape == (
        6,
        3,
        32,
        32,
    )
    assert dataset.train.labels.dtype == torch.int64
    assert dataset.train.labels[:4].tolist() == [1, 2, 3, 4]
    first = written["data_batch_1"][0]
    assert torch.equal(
        dataset.train.images[0, 0].flatten(), torch.from_numpy(first[:1024])
    )  # red plane
    assert torch.equal(
        dataset.train.images[0, 2].flatten(), torch.from_numpy(first[2048:])
    )  # blue plane

    resized = load_dataset("cifar10", data_dir=tmp_path, image_size=16)
    assert (
        resized.train.images.shape == (20, 3, 16, 16) and resized.train.images.dtype == torch.uint8
    )


def test_poisoned_cifar_batch_is_refused_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_downloads(monkeypatch)
    _fake_cifar10(tmp_path)
    marker = tmp_path / "marker"
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": _ShellPayload(marker)}, protocol=2))
    with pytest.raises(WorkbenchError, match="refusing to load"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_stays_one_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_downloads(monkeypatch)
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 12), ("t10k", 5)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)
    dataset = load_dataset("mnist", data_dir=tmp_path)
    assert dataset.train.images.shape == (12, 1, 28, 28) and dataset.test.images.shape == (
        5,
        1,
        28,
        28,
    )
    assert dataset.channels == 1 and len(dataset.mean) == 1 and dataset.num_classes == 10
    assert dataset.test.labels.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("name", "folder", "archive"),
    [
        ("cifar10", "cifar10", "cifar-10-python.tar.gz"),
        ("cifar100", "cifar100", "cifar-100-python.tar.gz"),
        ("fashion-mnist", "fashion-mnist/FashionMNIST/raw", "train-images-idx3-ubyte.gz"),
    ],
)
def test_offline_download_says_where_to_put_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, folder: str, archive: str
) -> None:
    attempts = _no_downloads(monkeypatch)
    with pytest.raises(WorkbenchError) as raised:
        load_dataset(name, data_dir=tmp_path)
    message = str(raised.value)
    assert attempts, "the loader should have tried to download"
    assert "\n" not in message
    assert (
        str(tmp_path / folder) in message and archive in message and "--dataset shapes" in message
    )


def test_download_off_and_files_missing_is_an_error_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = _no_downloads(monkeypatch)
    with pytest.raises(WorkbenchError, match="shapes") as raised:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert attempts == [] and str(tmp_path / "mnist") in str(raised.value)


# ---- shapes of data sets ----------------------------------------------------------------------


def test_dataset_shape_without_loading(tmp_path: Path) -> None:
    assert dataset_shape("cifar10") == (3, 32, 10)
    assert dataset_shape("cifar100") == (3, 32, 100)
    assert dataset_shape("mnist") == (1, 28, 10)
    assert dataset_shape("fashion-mnist", 32) == (1, 32, 10)
    assert dataset_shape("shapes") == (3, 32, 10)
    root = _single_folder(tmp_path / "flat", {"a": 1, "b": 1, "c": 1})
    assert dataset_shape(str(root)) == (3, 32, 3)
    assert dataset_shape(str(root), 64) == (3, 64, 3)
    with pytest.raises(WorkbenchError):
        dataset_shape(str(tmp_path / "missing"))


def test_every_configurable_data_set_name_has_a_shape() -> None:
    assert set(config.DATASET_NAMES) == set(NAMED_SHAPES)


@pytest.mark.parametrize("layout, words", [("one folder", "leaves no test images"),
                                           ("train and test", "holds out no validation images")])
def test_data_too_few_images_to_hold_out_is_refused_before_training(tmp_path: Path, capsys, layout, words) -> None:
    from tests.support.cli import one_line_error

    root = tmp_path / "few"
    for split in (["."] if layout == "one folder" else ["train", "test"]):
        for label, name in enumerate(("a", "b", "c")):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.full((8, 8, 3), 60 * label, np.uint8)).save(root / split / name / "0.png")
    runs_dir = tmp_path / "runs"
    error = one_line_error(capsys, ["train", "--dataset", str(root), "--arch", "linear", "--device", "cpu",
                                    "--image-size", "8", "--epochs", "1", "--val-fraction", "0.2",
                                    "--runs-dir", str(runs_dir), "--data-dir", str(tmp_path / "data")])
    assert words in error
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_folder_scanning_ends_counts_each_file_once_and_lists_what_it_skips(tmp_path):
    from workbench.core.data import scan as folders

    dataset = image_folder(tmp_path / "animals")
    ant = dataset / "train" / "ant"
    (ant / "loop").symlink_to(ant)  # a loop to "."
    (ant / "deeper").mkdir()
    (ant / "deeper" / "back").symlink_to(ant)  # a loop that branches
    (ant / "deeper" / "up").symlink_to(dataset / "train")  # into the split: other classes' files stay theirs
    (ant / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a link to nothing
    os.mkfifo(ant / "pipe.png")  # would block a decoder forever
    warnings: list[str] = []
    scan = folders.scan(dataset, warnings.append)
    train_paths = [path for path, _ in scan.train_files]
    assert len(train_paths) == 3 * 12 and len({os.path.realpath(p) for p in train_paths}) == 36
    assert any("gone.png: a link to nothing" in line for line in scan.skipped)
    assert any("pipe.png: not a regular file" in line for line in scan.skipped)
    assert warnings and all(line.startswith("skipping") for line in warnings)
    from workbench.core.data.load import load_dataset

    data = load_dataset(str(dataset), data_dir=tmp_path / "data", image_size=8)
    assert len(data.train) == 36 and any("pipe.png" in line for line in data.skipped)


def test_names_that_are_not_utf8_are_refused_or_skipped_with_a_sentence(tmp_path, capsys):
    dataset = image_folder(tmp_path / "animals")
    os.rename(dataset / "train" / "bee" / "000.png", os.fsdecode(bytes(dataset / "train" / "bee") + b"/b\xff.png"))
    runs_dir = tmp_path / "runs"
    args = ["train", "--dataset", str(dataset), "--arch", "linear", "--device", "cpu", "--image-size", "8",
            "--epochs", "1", "--data-dir", str(tmp_path / "d"), "--runs-dir", str(runs_dir)]
    assert main(args) == 0  # the file with the odd name is skipped and listed
    (run_dir,) = runs_dir.iterdir()
    assert any("not valid UTF-8" in line for line in runs.read_run_info(run_dir)["skipped_files"])
    os.rename(dataset / "train" / "cow", os.fsdecode(bytes(dataset / "train") + b"/c\xffw"))
    assert "not valid UTF-8" in one_line_error(capsys, args + ["--runs-dir", str(tmp_path / "runs2")])
    assert not (tmp_path / "runs2").exists() or not list((tmp_path / "runs2").iterdir())


def test_a_link_to_a_folder_outside_the_data_set_is_not_followed(tmp_path):
    from workbench.core.data.scan import scan

    dataset = image_folder(tmp_path / "animals")
    elsewhere = image_folder(tmp_path / "elsewhere", classes=("x", "y"))
    (dataset / "train" / "ant" / "everything").symlink_to(elsewhere)
    found = scan(dataset)
    assert len(found.train_files) == 36
    assert any("a link to a folder outside the data set" in line for line in found.skipped)


def test_a_decompression_bomb_is_skipped_from_its_header(tmp_path):
    from workbench.core.data.folders import decode_image

    path = tmp_path / "bomb.png"
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 50_000, 50_000)  # IHDR width and height: 2.5 gigapixels
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="too large to decode"):
        decode_image(path, 8)


def test_a_folder_one_level_too_high_is_refused_naming_the_one_inside(tmp_path, capsys):
    image_folder(tmp_path / "downloads" / "cifar10")
    line = one_line_error(capsys, ["train", "--dataset", str(tmp_path / "downloads"), "--device", "cpu"])
    assert "holds one folder, cifar10" in line and f"--dataset {tmp_path / 'downloads' / 'cifar10'}" in line


def test_a_single_class_is_refused(tmp_path, capsys):
    image_folder(tmp_path / "one", classes=("only",))
    line = one_line_error(capsys, ["train", "--dataset", str(tmp_path / "one"), "--device", "cpu"])
    assert "needs at least 2 classes" in line


def test_resize_modes_stretch_crop_or_pad(tmp_path):
    from workbench.core.data.folders import decode_image

    path = wide_image(tmp_path / "wide.png")
    stretch, crop, pad = (decode_image(path, 16, 3, mode) for mode in ("stretch", "crop", "pad"))
    assert crop[:, 8, 0].tolist() == [255, 0, 0] and crop[:, 8, 15].tolist() == [0, 0, 255]  # the centre square
    assert pad[:, 0, 8].tolist() == [0, 0, 0] and pad[:, 15, 8].tolist() == [0, 0, 0]  # black bars above and below
    assert pad[:, 8, 0].tolist() == [255, 0, 0]  # the whole width kept
    assert not torch.equal(stretch, crop) and not torch.equal(crop, pad)


@pytest.mark.parametrize("mode", ["stretch", "crop", "pad"])
def test_every_resize_mode_is_known_to_config_and_decoder(mode):
    from workbench.core.config import RESIZE_MODES as CONFIG_MODES
    from workbench.core.data.folders import RESIZE_MODES

    assert CONFIG_MODES == RESIZE_MODES and mode in RESIZE_MODES
