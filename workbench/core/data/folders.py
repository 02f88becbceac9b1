"""Image folders in ImageFolder layout: find the files, decode them to uint8 tensors, split them.

Layouts: `<root>/train/<class>/*` with `<root>/test/<class>/*` (or `val/`), or `<root>/<class>/*`
split per class by test_fraction. Every image becomes RGB and is stretched to image_size x
image_size with Pillow's bicubic filter, which antialiases when shrinking (its support widens
with the scale factor), so large photos do not alias.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
    skipped: list[str] = field(default_factory=list)  # "path: reason" for what could not be an image
    val_dir: Path | None = None  # root/val when root/test exists too: the validation split
    val_files: list[tuple[str, int]] | None = None


def class_names(root: Path) -> list[str]:
    """Class names of a folder data set (its class subfolders), without reading any image."""
    _require_folder(root)
    train_dir = root / "train"
    return [
        folder.name for folder in _class_folders(train_dir if train_dir.is_dir() else root, root)
    ]


def scan(root: Path, warn: Log = lambda message: None) -> FolderScan:
    """Find the image files of each split and class; WorkbenchError for a layout we cannot use.

    Every real file is found once, whatever links lead to it; links to nothing, link loops and
    anything that is not a regular file (a pipe, a device) are skipped, listed and warned about,
    so scanning always ends and decoding never blocks.
    """
    _require_folder(root)
    root = root.resolve()
    skipped: list[str] = []
    train_dir, test_dir, val_dir = root, None, None
    if (root / "train").is_dir():
        train_dir = root / "train"
        present = [root / name for name in TEST_FOLDER_NAMES if (root / name).is_dir()]
        test_dir = present[0] if present else None
        val_dir = present[1] if len(present) > 1 else None
    classes, train_files = _scan_classes(train_dir, root, skipped)
    test_files = val_files = None
    if test_dir is not None:
        test_classes, test_files = _scan_classes(test_dir, root, skipped)
        _require_same_classes(train_dir, classes, test_dir, test_classes)
    if val_dir is not None:
        val_classes, val_files = _scan_classes(val_dir, root, skipped)
        _require_same_classes(train_dir, classes, val_dir, val_classes)
    for line in skipped[:MAX_WARNINGS]:
        warn(f"skipping {line}")
    if len(skipped) > MAX_WARNINGS:
        warn(f"... and {len(skipped) - MAX_WARNINGS} more files skipped")
    every_file = [path for path, _ in train_files + (test_files or []) + (val_files or [])]
    fingerprint = _fingerprint(every_file, root)
    return FolderScan(root, classes, train_dir, test_dir, train_files, test_files, fingerprint,
                      skipped, val_dir, val_files)


def decode(
    scan: FolderScan,
    image_size: int,
    seed: int,
    test_fraction: float,
    log: Log,
    warn: Log,
    should_stop: Callable[[], bool] = never_stop,
) -> tuple[list[str], Split, Split, list[str], Split | None]:
    """Decode every file of a scan: (classes, train, test, skipped "path: reason" lines, val or None)."""
    train_paths = [path for path, _ in scan.train_files]
    test_paths = [path for path, _ in scan.test_files or []]
    val_paths = [path for path, _ in scan.val_files or []]
    log(f"decoding {len(train_paths) + len(test_paths) + len(val_paths)} images from {scan.root}")
    images, failures = _decode_files(train_paths + test_paths + val_paths, image_size, should_stop)
    unreadable = [f"{path}: {reason}" for path, reason in failures.items()]
    for line in unreadable[:MAX_WARNINGS]:
        warn(f"skipping unreadable image {line}")
    if len(unreadable) > MAX_WARNINGS:
        warn(f"... and {len(unreadable) - MAX_WARNINGS} more unreadable images skipped")
    skipped = list(scan.skipped) + unreadable

    train = _make_split(
        scan.train_dir, scan.train_files, images[: len(train_paths)], failures, scan.classes
    )
    if scan.test_dir is not None and scan.test_files is not None:
        end = len(train_paths) + len(test_paths)
        test = _make_split(scan.test_dir, scan.test_files, images[len(train_paths) : end], failures, scan.classes)
        val = None
        if scan.val_dir is not None and scan.val_files is not None:
            val = _make_split(scan.val_dir, scan.val_files, images[end:], failures, scan.classes)
            log(f"{scan.val_dir.name}/ is the validation split and {scan.test_dir.name}/ the test split")
        return scan.classes, train, test, skipped, val
    log(
        f"{scan.root} has no test/ or val/ folder: holding out {test_fraction:.0%} of each class "
        f"(seed {seed}) for testing"
    )
    train_rows, test_rows = stratified_split(train.labels, test_fraction, seed)
    return scan.classes, train.subset(train_rows), train.subset(test_rows), skipped, None


# ---- scanning ----------------------------------------------------------------------------------


def _require_folder(root: Path) -> None:
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise WorkbenchError(f"data set folder {root} {what}")


def _class_folders(parent: Path, root: Path) -> list[Path]:
    folders = _visible_folders(parent)
    if not folders:
        hint = f"{parent}/<class>/*.jpg"
        if parent == root:
            hint += f" or {root}/train/<class>/..."
        raise WorkbenchError(f"folder {parent} has no class subfolders; expected {hint}", field="dataset")
    if len(folders) < 2:
        inner = folders[0]
        if parent == root and ((inner / "train").is_dir() or len(_visible_folders(inner)) >= 2):
            raise WorkbenchError(
                f"{root} holds one folder, {inner.name}, which looks like the data set itself; "
                f"use --dataset {inner}", field="dataset",
            )
        raise WorkbenchError(
            f"{parent} has only one class folder ({inner.name}); a classifier needs at least 2 classes",
            field="dataset",
        )
    return folders


def _visible_folders(parent: Path) -> list[Path]:
    try:
        return sorted(entry for entry in parent.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    except OSError as error:
        raise WorkbenchError(f"cannot list {parent} ({error.strerror or error})", field="dataset") from None


def _scan_classes(parent: Path, root: Path, skipped: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    files: list[tuple[str, int]] = []
    classes = []
    seen: dict[tuple[int, int], str] = {}  # real files of this split, by (device, inode)
    class_folders = _class_folders(parent, root)
    # A link from one class folder into another (or into the split) must not relabel its files.
    others = {_inode(path) for path in [parent, *class_folders]}
    for label, folder in enumerate(class_folders):
        images = _image_files(folder, seen, skipped, others - {_inode(folder)})
        if not images:
            raise WorkbenchError(
                f"class folder {folder} has no images ({' '.join(IMG_EXTENSIONS)}); "
                "add some or remove the folder"
            )
        classes.append(folder.name)
        files.extend((path, label) for path in images)
    return classes, files


def _inode(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _image_files(
    folder: Path, seen: dict[tuple[int, int], str], skipped: list[str], forbidden: set[tuple[int, int]]
) -> list[str]:
    """Image files under folder, recursively, sorted by path, as strings.

    Each real folder is walked once (a link back to a folder already walked is a loop) and
    each real file counted once. Hidden files (e.g. macOS ._x.jpg) are not images. Strings,
    not Paths: pathlib costs seconds on folders of 100,000 files.
    """
    found: list[str] = []
    walked: set[tuple[int, int]] = set(forbidden)
    pending = [str(folder)]
    while pending:
        directory = pending.pop()
        try:
            status = os.stat(directory)
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            skipped.append(f"{directory}: cannot be listed ({error.strerror or error})")
            continue
        key = (status.st_dev, status.st_ino)
        if key in walked:
            why = "leads into another class's folder" if key in forbidden else "leads back to a folder already scanned (a loop)"
            skipped.append(f"{directory}: a link that {why}")
            continue
        walked.add(key)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    pending.append(entry.path)
                    continue
            except OSError:
                pass
            if not entry.name.lower().endswith(IMG_EXTENSIONS):
                continue
            try:
                file_status = entry.stat()  # through links
            except OSError:
                skipped.append(f"{entry.path}: a link to nothing" if entry.is_symlink() else f"{entry.path}: cannot be read")
                continue
            if not stat.S_ISREG(file_status.st_mode):
                skipped.append(f"{entry.path}: not a regular file")
                continue
            key = (file_status.st_dev, file_status.st_ino)
            if key in seen:
                if seen[key] != entry.path:
                    skipped.append(f"{entry.path}: the same file as {seen[key]}")
                continue
            seen[key] = entry.path
            found.append(entry.path)
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


def find_unreadable(paths: list[str], size: int, should_stop: Callable[[], bool] = never_stop) -> dict[str, str]:
    """{path: reason} of the files that would be skipped, decoded exactly as in memory but
    without keeping any pixels (for folders too big to hold)."""
    return _decode_files(paths, size, should_stop, keep=False)[1]


def _decode_files(
    paths: list[str], size: int, should_stop: Callable[[], bool] = never_stop, keep: bool = True
) -> tuple[np.ndarray | None, dict[str, str]]:
    """(N, size, size, 3) uint8 pixels (zeros where unreadable; None unless `keep`) and the
    reasons for failures. Each batch first checks `should_stop`, so a stop ends a long decode
    within one batch.
    """
    pixels = np.zeros((len(paths), size, size, 3), dtype=np.uint8) if keep else None
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
            elif pixels is not None:
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
