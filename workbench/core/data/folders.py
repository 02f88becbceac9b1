"""Image folders in ImageFolder layout: find the files, decode them to uint8 tensors, split them.

Layouts: `<root>/train/<class>/*` with `<root>/test/<class>/*` (or `val/`), or `<root>/<class>/*`
split per class by test_fraction. Every image becomes RGB and is stretched to image_size x
image_size with Pillow's bicubic filter, which antialiases when shrinking (its support widens
with the scale factor), so large photos do not alias.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from workbench.core.data.types import Log, Split, stratified_split
from workbench.core.errors import StopRequested, WorkbenchError, never_stop

TEST_FOLDER_NAMES = ("test", "val")  # the first one present is the test split
MAX_WARNINGS = 10  # unreadable files logged one by one; the rest are counted
_DECODE_BATCH = 256  # files a decoding thread takes at a time
_MAX_DECODE_THREADS = 8
# 16-bit grayscale as Pillow opens it; its convert() clips these at 255 instead of scaling.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class FolderScan:
    """The image files of a folder data set, found but not yet decoded."""

    root: Path  # resolved
    classes: list[str]
    train_dir: Path  # root/train, or root itself when there is no train/
    test_dir: Path | None  # root/test or root/val; None: split the train files instead
    train_files: list[tuple[str, int]]  # (file path, label), sorted by path
    test_files: list[tuple[str, int]] | None  # None exactly when test_dir is
    fingerprint: list[tuple[str, int, int]]  # (path under root, bytes, mtime ns) of every image


def class_names(root: Path) -> list[str]:
    """Class names of a folder data set (its class subfolders), without reading any image."""
    _require_folder(root)
    train_dir = root / "train"
    return [
        folder.name for folder in _class_folders(train_dir if train_dir.is_dir() else root, root)
    ]


def scan(root: Path, warn: Log = lambda message: None) -> FolderScan:
    """Find the image files of each split and class; WorkbenchError for a layout we cannot use."""
    _require_folder(root)
    root = root.resolve()
    train_dir, test_dir = root, None
    if (root / "train").is_dir():
        train_dir = root / "train"
        test_dir = next((root / name for name in TEST_FOLDER_NAMES if (root / name).is_dir()), None)
    classes, train_files = _scan_classes(train_dir, root)
    test_files = None
    if test_dir is not None:
        test_classes, test_files = _scan_classes(test_dir, root)
        _require_same_classes(train_dir, classes, test_dir, test_classes)
    every_file = [path for path, _ in train_files + (test_files or [])]
    fingerprint = _fingerprint(every_file, root)
    return FolderScan(root, classes, train_dir, test_dir, train_files, test_files, fingerprint)


def decode(
    scan: FolderScan,
    image_size: int,
    seed: int,
    test_fraction: float,
    log: Log,
    warn: Log,
    should_stop: Callable[[], bool] = never_stop,
) -> tuple[list[str], Split, Split, list[str]]:
    """Decode every file of a scan: (classes, train, test, skipped "path: reason" lines)."""
    train_paths = [path for path, _ in scan.train_files]
    test_paths = [path for path, _ in scan.test_files or []]
    log(f"decoding {len(train_paths) + len(test_paths)} images from {scan.root}")
    images, failures = _decode_files(train_paths + test_paths, image_size, should_stop)
    skipped = [f"{path}: {reason}" for path, reason in failures.items()]
    for line in skipped[:MAX_WARNINGS]:
        warn(f"skipping unreadable image {line}")
    if len(skipped) > MAX_WARNINGS:
        warn(f"... and {len(skipped) - MAX_WARNINGS} more unreadable images skipped")

    train = _make_split(
        scan.train_dir, scan.train_files, images[: len(train_paths)], failures, scan.classes
    )
    if scan.test_dir is not None and scan.test_files is not None:
        test_pixels = images[len(train_paths) :]
        test = _make_split(scan.test_dir, scan.test_files, test_pixels, failures, scan.classes)
        return scan.classes, train, test, skipped
    log(
        f"{scan.root} has no test/ or val/ folder: holding out {test_fraction:.0%} of each class "
        f"(seed {seed}) for testing"
    )
    train_rows, test_rows = stratified_split(train.labels, test_fraction, seed)
    return scan.classes, train.subset(train_rows), train.subset(test_rows), skipped


# ---- scanning ----------------------------------------------------------------------------------


def _require_folder(root: Path) -> None:
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise WorkbenchError(f"data set folder {root} {what}")


def _class_folders(parent: Path, root: Path) -> list[Path]:
    folders = sorted(
        entry for entry in parent.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if not folders:
        hint = f"{parent}/<class>/*.jpg"
        if parent == root:
            hint += f" or {root}/train/<class>/..."
        raise WorkbenchError(f"folder {parent} has no class subfolders; expected {hint}")
    return folders


def _scan_classes(parent: Path, root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    files: list[tuple[str, int]] = []
    classes = []
    for label, folder in enumerate(_class_folders(parent, root)):
        images = _image_files(folder)
        if not images:
            raise WorkbenchError(
                f"class folder {folder} has no images ({' '.join(IMG_EXTENSIONS)}); "
                "add some or remove the folder"
            )
        classes.append(folder.name)
        files.extend((path, label) for path in images)
    return classes, files


def _image_files(folder: Path) -> list[str]:
    """Image files under folder, recursively, sorted by path, as strings.

    Hidden files (e.g. macOS ._x.jpg) are not images. Strings, not Paths: pathlib costs
    seconds on folders of 100,000 files.
    """
    found = []
    for directory, subdirectories, names in os.walk(folder, followlinks=True):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found.extend(
            os.path.join(directory, name)
            for name in names
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)
        )
    return sorted(found)


def _require_same_classes(
    train_dir: Path, train: list[str], test_dir: Path, test: list[str]
) -> None:
    if train == test:
        return
    problems = []
    if set(train) - set(test):
        problems.append(f"{test_dir} lacks {', '.join(sorted(set(train) - set(test)))}")
    if set(test) - set(train):
        problems.append(f"{train_dir} lacks {', '.join(sorted(set(test) - set(train)))}")
    raise WorkbenchError(
        f"{train_dir} and {test_dir} must have the same class folders: {'; '.join(problems)}"
    )


def _fingerprint(paths: list[str], root: Path) -> list[tuple[str, int, int]]:
    """What changes when any image is added, removed or rewritten: the cache key uses it."""
    prefix = len(str(root)) + 1  # every path was found by walking a folder under root
    marks = []
    for path in sorted(paths):
        status = os.stat(path)
        marks.append((path[prefix:].replace(os.sep, "/"), status.st_size, status.st_mtime_ns))
    return marks


# ---- decoding ----------------------------------------------------------------------------------


def _decode_files(
    paths: list[str], size: int, should_stop: Callable[[], bool] = never_stop
) -> tuple[np.ndarray, dict[str, str]]:
    """(N, size, size, 3) uint8 pixels (zeros where unreadable) and the reasons for failures.

    Each batch first checks `should_stop`, so a stop ends a long decode within one batch.
    """
    pixels = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    failures: dict[str, str] = {}
    batches = [
        paths[start : start + _DECODE_BATCH] for start in range(0, len(paths), _DECODE_BATCH)
    ]

    def decode_batch(batch: list[str]) -> list[np.ndarray | str]:
        if should_stop():
            raise StopRequested
        return [_decode_one(path, size) for path in batch]

    # Pillow releases the GIL while decoding and resizing, so threads help with large images;
    # more threads than cores only fight over the GIL on small ones.
    workers = min(_MAX_DECODE_THREADS, _usable_cores())
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        results = (result for batch in pool.map(decode_batch, batches) for result in batch)
        for row, result in enumerate(results):
            if isinstance(result, str):
                failures[paths[row]] = result
            else:
                pixels[row] = result
    return pixels, failures


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: respects taskset and container CPU sets
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def decode_image(path: Path, image_size: int, channels: int = 3) -> torch.Tensor:
    """One image file as uint8 (channels, size, size), decoded exactly as folder data sets are.

    channels 1 gives Pillow's luma ("L"), for models trained on MNIST-like sets. Raises OSError
    or ValueError when the file is not a readable image.
    """
    try:
        pixels = _read_pixels(str(path), image_size, "L" if channels == 1 else "RGB")
    except (OSError, ValueError):
        raise
    except Exception as error:  # noqa: BLE001 - see _decode_one
        raise ValueError(_reason(error)) from error
    tensor = torch.from_numpy(pixels.copy())  # Pillow's buffer is read-only
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def _decode_one(path: str, size: int) -> np.ndarray | str:
    """The image as (size, size, 3) uint8 RGB, or why it cannot be read."""
    try:
        return _read_pixels(path, size, "RGB")
    except UnidentifiedImageError:
        return "empty file" if os.path.getsize(path) == 0 else "not an image Pillow can read"
    # Decoders raise many exception types for bad bytes; every one means "skip this file".
    except Exception as error:  # noqa: BLE001
        return _reason(error)


def _read_pixels(path: str, size: int, mode: str) -> np.ndarray:
    with Image.open(path) as image:
        # JPEG only: decode at a reduced DCT scale that stays at least twice the target size.
        image.draft(mode, (2 * size, 2 * size))
        image.load()  # decodes now, so a truncated file fails here rather than going half grey
        # Phone photos store their rotation in EXIF: use them the way their owner sees them.
        converted = _convert(ImageOps.exif_transpose(image), mode)
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(converted, dtype=np.uint8)


def _convert(image: Image.Image, mode: str) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((wide / 257).round().clip(0, 255).astype(np.uint8))  # 0..65535
    return image.convert(mode)


def _reason(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _make_split(
    parent: Path,
    files: list[tuple[str, int]],
    pixels: np.ndarray,
    failures: dict[str, str],
    classes: list[str],
) -> Split:
    keep = [row for row, (path, _) in enumerate(files) if path not in failures]
    labels = torch.tensor([files[row][1] for row in keep], dtype=torch.int64)
    unreadable = [name for label, name in enumerate(classes) if not (labels == label).any()]
    if unreadable:
        raise WorkbenchError(
            f"class folder {parent / unreadable[0]} has no readable images (the log lists why)"
        )
    images = torch.from_numpy(pixels[keep]).permute(0, 3, 1, 2).contiguous()
    return Split(images=images, labels=labels, sources=[files[row][0] for row in keep])
