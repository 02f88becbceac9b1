"""Data sets by name or folder, as uint8 tensors with class names and train-split statistics.

`load_dataset` decodes once and keeps the result under `data_dir/cache/`, so the second start
reads one safetensors file instead of decoding images. The loaders behind it live in
`shapes.py` (generated), `named_sets.py` (torchvision downloads) and `folders.py` (ImageFolder).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from workbench.core.errors import never_stop

Log = Callable[[str], None]

# (channels, native image size, classes) of each built-in data set.
NAMED_SHAPES: dict[str, tuple[int, int, int]] = {
    "shapes": (3, 32, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
    "mnist": (1, 28, 10),
    "fashion-mnist": (1, 28, 10),
}
FOLDER_IMAGE_SIZE = 32  # what image_size 0 means for a folder, whose images vary in size
_STATS_CHUNK = 4096  # images converted to float64 at a time when computing mean/std


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W), CPU, contiguous
    labels: torch.Tensor  # int64, (N,)
    sources: list[str] | None  # source file path per image when it came from files, else None
    indices: torch.Tensor | None = None  # index of each image in its source data set; None = arange

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    name: str  # "shapes", "cifar10", ... or the folder path as given
    classes: list[str]
    train: Split
    test: Split
    mean: tuple[float, ...]  # per channel, in [0, 1] units, from the train split only
    std: tuple[float, ...]
    skipped: list[str] = field(default_factory=list)  # "path: reason" per unreadable file

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def dataset_shape(name_or_path: str, image_size: int = 0) -> tuple[int, int, int]:
    """(channels, image_size, num_classes) without loading; image_size 0 = the native size.

    cifar10 (3, 32, 10), cifar100 (3, 32, 100), mnist and fashion-mnist (1, 28, 10),
    shapes (3, 32, 10); a folder is (3, 32 or image_size, number of class subfolders).
    """
    if name_or_path in NAMED_SHAPES:
        channels, native, classes = NAMED_SHAPES[name_or_path]
        return channels, image_size or native, classes
    from workbench.core import folders

    classes = folders.class_names(Path(name_or_path).expanduser())
    return 3, image_size or FOLDER_IMAGE_SIZE, len(classes)


def load_dataset(
    name_or_path: str,
    *,
    data_dir: Path,
    image_size: int = 0,
    seed: int = 0,
    val_fraction: float = 0.1,
    download: bool = True,
    log: Log = lambda message: None,
    stream_over_mb: float = 0.0,
    should_stop: Callable[[], bool] = never_stop,
) -> Dataset:
    """Load a built-in data set by name, or a folder in ImageFolder layout, as uint8 tensors.

    image_size 0 keeps a built-in set's native size and means 32 for folders. seed and
    val_fraction only matter for a folder without test/ or val/, which is split per class.
    Raises WorkbenchError, with what to do next, for missing downloads and broken folders, and
    StopRequested when `should_stop()` turns true while files are being decoded.
    """
    from workbench.core import cache

    data_dir = Path(data_dir).expanduser()
    scan = None
    if name_or_path not in NAMED_SHAPES:
        from workbench.core import folders, streaming

        scan = folders.scan(Path(name_or_path).expanduser())
        size, limit = image_size or FOLDER_IMAGE_SIZE, streaming.limit_mb(stream_over_mb)
        if streaming.decoded_mb(scan, size) > limit:
            log(
                f"{name_or_path} would take {streaming.decoded_mb(scan, size):,.0f} MB decoded, over "
                f"the {limit:,.0f} MB in-memory limit: streaming it from the files with workers"
            )
            return streaming.streaming_dataset(name_or_path, scan, size, seed, val_fraction, log)
    identity, build = _source(
        name_or_path, data_dir, image_size, seed, val_fraction, download, log, scan, should_stop
    )
    cache_file = cache.path_for(data_dir, _cache_label(name_or_path), identity)
    stored = cache.read(cache_file, log)
    if stored is not None:
        dataset = _from_stored(name_or_path, *stored)
        log(
            f"loaded cached {name_or_path} ({len(dataset.train)} train, {len(dataset.test)} test "
            f"images) from {cache_file}"
        )
        if dataset.skipped:
            log(f"{len(dataset.skipped)} unreadable files were skipped when this cache was made")
        return dataset

    started = time.perf_counter()
    classes, train, test, skipped = build()
    mean, std = channel_stats(train.images)
    dataset = Dataset(name_or_path, classes, train, test, mean, std, skipped)
    log(
        f"prepared {name_or_path}: {len(train)} train and {len(test)} test images of "
        f"{dataset.channels}x{dataset.image_size}x{dataset.image_size} in "
        f"{time.perf_counter() - started:.1f}s"
    )
    cache.write(cache_file, *_to_stored(dataset), log)
    return dataset


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in [0, 1] units."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _STATS_CHUNK):
        chunk = images[start : start + _STATS_CHUNK].to(torch.float64) / 255
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = max(images.shape[0] * images.shape[2] * images.shape[3], 1)
    mean = total / count
    # A constant channel (a folder of flat colours) would divide by zero; one grey level is the floor.
    std = (total_sq / count - mean.square()).clamp(min=0).sqrt().clamp(min=1 / 255)
    return tuple(mean.tolist()), tuple(std.tolist())


# ---- sources ---------------------------------------------------------------------------------

Loaded = tuple[list[str], Split, Split, list[str]]  # classes, train, test, skipped files
Build = Callable[[], Loaded]


def _source(
    name_or_path: str,
    data_dir: Path,
    image_size: int,
    seed: int,
    val_fraction: float,
    download: bool,
    log: Log,
    scan: Any = None,
    should_stop: Callable[[], bool] = never_stop,
) -> tuple[dict[str, Any], Build]:
    """What identifies the data for the cache, and how to build it when the cache misses."""
    if name_or_path == "shapes":
        from workbench.core import shapes

        size = image_size or shapes.NATIVE_SIZE

        def build_shapes() -> Loaded:
            train, test = shapes.generate(size, should_stop)
            return list(shapes.CLASSES), train, test, []

        return {"set": "shapes", "version": shapes.VERSION, "image_size": size}, build_shapes

    if name_or_path in NAMED_SHAPES:
        from workbench.core import named_sets

        size = image_size or NAMED_SHAPES[name_or_path][1]

        def build_named() -> Loaded:
            classes, train, test = named_sets.load(name_or_path, data_dir, size, download, log)
            return classes, train, test, []

        return {"set": name_or_path, "image_size": size}, build_named

    from workbench.core import folders

    scan = scan or folders.scan(Path(name_or_path).expanduser())
    size = image_size or FOLDER_IMAGE_SIZE
    identity: dict[str, Any] = {
        "folder": str(scan.root),
        "files": scan.fingerprint,
        "image_size": size,
    }
    if scan.test_files is None:
        identity |= {"val_fraction": val_fraction, "seed": seed}
    return identity, lambda: folders.decode(scan, size, seed, val_fraction, log, should_stop)


def _cache_label(name_or_path: str) -> str:
    """A readable prefix for the cache file name; the hash after it is what matters."""
    if name_or_path in NAMED_SHAPES:
        return name_or_path
    return Path(name_or_path).expanduser().resolve().name or "folder"


# ---- cache (de)serialisation ---------------------------------------------------------------------


def _to_stored(dataset: Dataset) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, Any] = {
        "classes": dataset.classes,
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "skipped": dataset.skipped,
    }
    for part, split in (("train", dataset.train), ("test", dataset.test)):
        tensors[f"{part}_images"] = split.images.contiguous()
        tensors[f"{part}_labels"] = split.labels.contiguous()
        if split.indices is not None:
            tensors[f"{part}_indices"] = split.indices.contiguous()
        metadata[f"{part}_sources"] = split.sources
    return tensors, metadata


def _from_stored(name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Dataset:
    splits = {
        part: Split(
            images=tensors[f"{part}_images"],
            labels=tensors[f"{part}_labels"],
            sources=metadata[f"{part}_sources"],
            indices=tensors.get(f"{part}_indices"),
        )
        for part in ("train", "test")
    }
    return Dataset(
        name=name,
        classes=list(metadata["classes"]),
        train=splits["train"],
        test=splits["test"],
        mean=tuple(metadata["mean"]),
        std=tuple(metadata["std"]),
        skipped=list(metadata["skipped"]),
    )
