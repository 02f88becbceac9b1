"""Data sets by name or folder, as uint8 tensors with class names and train-split statistics.

`load_dataset` decodes once and keeps the result under `data_dir/cache/`, so the second start
reads one safetensors file instead of decoding images. The loaders behind it live in
`shapes.py` (generated), `named_sets.py` (torchvision downloads) and `folders.py` (ImageFolder).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from workbench.core.data.normalize import channel_stats
from workbench.core.data.types import FOLDER_IMAGE_SIZE, NAMED_SHAPES, Dataset, Log, Split
from workbench.core.errors import never_stop


def dataset_shape(name_or_path: str, image_size: int = 0) -> tuple[int, int, int]:
    """(channels, image_size, num_classes) without loading; image_size 0 = the native size.

    cifar10 (3, 32, 10), cifar100 (3, 32, 100), mnist and fashion-mnist (1, 28, 10),
    shapes (3, 32, 10); a folder is (3, 32 or image_size, number of class subfolders).
    """
    if name_or_path in NAMED_SHAPES:
        channels, native, classes = NAMED_SHAPES[name_or_path]
        return channels, image_size or native, classes
    from workbench.core.data import scan

    classes = scan.class_names(Path(name_or_path).expanduser())
    return 3, image_size or FOLDER_IMAGE_SIZE, len(classes)


def load_dataset(
    name_or_path: str,
    *,
    data_dir: Path,
    image_size: int = 0,
    seed: int = 0,
    test_fraction: float = 0.1,
    val_fraction: float = 0.0,
    download: bool = True,
    log: Log = lambda message: None,
    warn: Log | None = None,
    stream_over_mb: float = 0.0,
    should_stop: Callable[[], bool] = never_stop,
    resize: str = "stretch",
) -> Dataset:
    """Load a built-in data set by name, or a folder in ImageFolder layout, as uint8 tensors.

    image_size 0 keeps a built-in set's native size and means 32 for folders. A folder
    without test/ holds out `test_fraction` of each class for testing; `val_fraction` of the
    training split becomes the validation split (stratified; 0 = none). Both use `seed`.
    `log` gets progress lines and `warn` (default: log) what the user should act on. `resize`
    says how a folder's images of other shapes become square (folders.RESIZE_MODES).
    Raises WorkbenchError, with what to do next, for missing downloads and broken folders, and
    StopRequested when `should_stop()` turns true while files are being decoded.
    """
    dataset = _load(
        name_or_path, Path(data_dir).expanduser(), image_size, seed, test_fraction, download,
        log, warn or log, stream_over_mb, should_stop, resize,
    )
    return dataset.with_validation(val_fraction, seed)


def _with_identity(dataset: Dataset, scan) -> Dataset:
    if scan is None:  # a named set: nothing to import (scan brings in torchvision, ~0.3 CPU-s)
        return dataset
    from dataclasses import replace

    from workbench.core.data.scan import class_digests

    return replace(dataset, identity=class_digests(scan))


def _load(name_or_path, data_dir, image_size, seed, test_fraction, download, log, warn, stream_over_mb, should_stop,
          resize) -> Dataset:
    from workbench.core.data import cache

    scan = None
    if name_or_path not in NAMED_SHAPES:
        from workbench.core.data import scan as folder_scan
        from workbench.core.data import streaming

        scan = folder_scan.scan(Path(name_or_path).expanduser(), warn)
        size, limit = image_size or FOLDER_IMAGE_SIZE, streaming.limit_mb(stream_over_mb)
        if streaming.decoded_mb(scan, size) > limit:
            log(
                f"{name_or_path} would take {streaming.decoded_mb(scan, size):,.0f} MB decoded, over "
                f"the {limit:,.0f} MB in-memory limit: streaming it from the files with workers"
            )
            return _with_identity(streaming.streaming_dataset(name_or_path, scan, size, seed, test_fraction, log,
                                                              warn, data_dir, should_stop, resize), scan)
    identity, build = _source(
        name_or_path, data_dir, image_size, seed, test_fraction, download, log, warn, scan, should_stop, resize
    )
    cache_file = cache.path_for(data_dir, _cache_label(name_or_path), identity)
    stored = cache.read(cache_file, warn)
    if stored is not None:
        dataset = _from_stored(name_or_path, *stored)
        log(
            f"loaded cached {name_or_path} ({len(dataset.train)} train, {len(dataset.test)} test "
            f"images) from {cache_file}"
        )
        if dataset.skipped:
            warn(f"{len(dataset.skipped)} unreadable files were skipped when this cache was made")
        return _with_identity(dataset, scan)

    started = time.perf_counter()
    classes, train, test, skipped, val = build()
    mean, std = channel_stats(train.images)
    dataset = Dataset(name_or_path, classes, train, test, mean, std, skipped, val)
    log(
        f"prepared {name_or_path}: {len(train)} train and {len(test)} test images of "
        f"{dataset.channels}x{dataset.image_size}x{dataset.image_size} in "
        f"{time.perf_counter() - started:.1f}s"
    )
    cache.write(cache_file, *_to_stored(dataset), warn)
    return _with_identity(dataset, scan)


# ---- sources ---------------------------------------------------------------------------------

Loaded = tuple[list[str], Split, Split, list[str], Split | None]  # classes, train, test, skipped, val
Build = Callable[[], Loaded]


def _source(
    name_or_path: str,
    data_dir: Path,
    image_size: int,
    seed: int,
    test_fraction: float,
    download: bool,
    log: Log,
    warn: Log,
    scan: Any = None,
    should_stop: Callable[[], bool] = never_stop,
    resize: str = "stretch",
) -> tuple[dict[str, Any], Build]:
    """What identifies the data for the cache, and how to build it when the cache misses."""
    if name_or_path == "shapes":
        from workbench.core.data import shapes

        size = image_size or shapes.NATIVE_SIZE

        def build_shapes() -> Loaded:
            train, test = shapes.generate(size, should_stop)
            return list(shapes.CLASSES), train, test, [], None

        return {"set": "shapes", "version": shapes.VERSION, "image_size": size}, build_shapes

    if name_or_path in NAMED_SHAPES:
        from workbench.core.data import named_sets

        size = image_size or NAMED_SHAPES[name_or_path][1]

        def build_named() -> Loaded:
            classes, train, test = named_sets.load(name_or_path, data_dir, size, download, log)
            return classes, train, test, [], None

        return {"set": name_or_path, "image_size": size}, build_named

    if scan is None:
        from workbench.core.data import scan as folder_scan

        scan = folder_scan.scan(Path(name_or_path).expanduser(), warn)
    size = image_size or FOLDER_IMAGE_SIZE
    identity: dict[str, Any] = {
        "folder": str(scan.root),
        "files": scan.fingerprint,
        "image_size": size,
    }
    if resize != "stretch":  # the default keeps the keys of caches made before the option existed
        identity["resize"] = resize
    if scan.test_files is None:
        identity |= {"test_fraction": test_fraction, "seed": seed}
    from workbench.core.data import folders

    return identity, lambda: folders.decode(scan, size, seed, test_fraction, log, warn, should_stop, resize)


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
    parts = [("train", dataset.train), ("test", dataset.test)] + ([("val", dataset.val)] if dataset.val else [])
    for part, split in parts:
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
        for part in ("train", "test", "val") if f"{part}_images" in tensors
    }
    return Dataset(
        name=name,
        classes=list(metadata["classes"]),
        train=splits["train"],
        test=splits["test"],
        mean=tuple(metadata["mean"]),
        std=tuple(metadata["std"]),
        skipped=list(metadata["skipped"]),
        val=splits.get("val"),
    )
