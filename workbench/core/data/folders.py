"""Image folders in ImageFolder layout: decode the files a scan found (scan.py) to uint8 tensors, split them.

A folder without test/ is split per class by test_fraction. Every image becomes RGB and is made image_size x image_size
(stretched, centre-cropped or padded: RESIZE_MODES) with Pillow's bicubic filter, which
antialiases when shrinking (its support widens with the scale factor), so large photos do not alias.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from workbench.core.data.scan import MAX_WARNINGS, FolderScan
from workbench.core.data.types import Log, Split, stratified_split
from workbench.core.errors import StopRequested, WorkbenchError, never_stop
from workbench.core.safe_read import GB, open_regular

RESIZE_MODES = ("stretch", "crop", "pad")  # how an image of another shape becomes square
_DECODE_BATCH = 256  # files a decoding thread takes at a time
MAX_PIXELS = 100_000_000  # larger images are skipped (and listed) rather than decoded into gigabytes
IMAGE_LIMIT = 2 * GB  # bytes: no image file a data set holds is larger
# Pillow's own bomb check would warn first; ours refuses from the header. Its EXIF and
# palette warnings are about files it can still read, which the skip list does not need.
Image.MAX_IMAGE_PIXELS = None
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
_MAX_DECODE_THREADS = 8
# 16-bit grayscale as Pillow opens it; its convert() clips these at 255 instead of scaling.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def decode(
    scan: FolderScan,
    image_size: int,
    seed: int,
    test_fraction: float,
    log: Log,
    warn: Log,
    should_stop: Callable[[], bool] = never_stop,
    resize: str = "stretch",
) -> tuple[list[str], Split, Split, list[str], Split | None]:
    """Decode every file of a scan: (classes, train, test, skipped "path: reason" lines, val or None)."""
    train_paths = [path for path, _ in scan.train_files]
    test_paths = [path for path, _ in scan.test_files or []]
    val_paths = [path for path, _ in scan.val_files or []]
    log(f"decoding {len(train_paths) + len(test_paths) + len(val_paths)} images from {scan.root}")
    images, failures = _decode_files(train_paths + test_paths + val_paths, image_size, should_stop, resize=resize)
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


# ---- decoding ----------------------------------------------------------------------------------


def find_unreadable(paths: list[str], size: int, should_stop: Callable[[], bool] = never_stop,
                    resize: str = "stretch") -> dict[str, str]:
    """{path: reason} of the files that would be skipped, decoded exactly as in memory but
    without keeping any pixels (for folders too big to hold)."""
    return _decode_files(paths, size, should_stop, keep=False, resize=resize)[1]


def _decode_files(
    paths: list[str], size: int, should_stop: Callable[[], bool] = never_stop, keep: bool = True,
    resize: str = "stretch",
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
        return [_decode_one(path, size, resize) for path in batch]

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


def decode_image(path: Path, image_size: int, channels: int = 3, resize: str = "stretch") -> torch.Tensor:
    """One image file as uint8 (channels, size, size), decoded exactly as folder data sets are.

    channels 1 gives Pillow's luma ("L"), for models trained on MNIST-like sets. Raises OSError
    or ValueError when the file is not a readable image.
    """
    try:
        pixels = _read_pixels(str(path), image_size, "L" if channels == 1 else "RGB", resize)
    except (OSError, ValueError):
        raise
    except Exception as error:  # noqa: BLE001 - see _decode_one
        raise ValueError(_reason(error)) from error
    tensor = torch.from_numpy(pixels.copy())  # Pillow's buffer is read-only
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def _decode_one(path: str, size: int, resize: str = "stretch") -> np.ndarray | str:
    """The image as (size, size, 3) uint8 RGB, or why it cannot be read."""
    try:
        return _read_pixels(path, size, "RGB", resize)
    except UnidentifiedImageError:
        return "empty file" if os.path.getsize(path) == 0 else "not an image Pillow can read"
    # Decoders raise many exception types for bad bytes; every one means "skip this file".
    except Exception as error:  # noqa: BLE001
        return _reason(error)


def _read_pixels(path: str, size: int, mode: str, resize: str = "stretch") -> np.ndarray:
    # The scan skipped what was not a regular file; opening through safe_read judges the file
    # actually opened (a pipe swapped in since would block Pillow's read forever).
    with open_regular(path, IMAGE_LIMIT) as handle, Image.open(handle) as image:
        width, height = image.size  # from the header: a tiny file can claim a gigapixel (a decompression bomb)
        if width * height > MAX_PIXELS:
            raise ValueError(f"too large to decode: {width}x{height} pixels (over {MAX_PIXELS // 10**6} megapixels)")
        # JPEG only: decode at a reduced DCT scale that stays at least twice the target size.
        image.draft(mode, (2 * size, 2 * size))
        image.load()  # decodes now, so a truncated file fails here rather than going half grey
        # Phone photos store their rotation in EXIF: use them the way their owner sees them.
        converted = _convert(ImageOps.exif_transpose(image), mode)
    if converted.size != (size, size):
        converted = square(converted, size, resize)
    return np.asarray(converted, dtype=np.uint8)


def square(image: Image.Image, size: int, resize: str) -> Image.Image:
    """stretch: to size x size; crop: the largest centred square, scaled (nothing distorted, the
    edges of a long side lost); pad: the whole image scaled into the square, black bars beside it."""
    bicubic = Image.Resampling.BICUBIC
    if resize == "crop":
        return ImageOps.fit(image, (size, size), method=bicubic)
    if resize == "pad":
        return ImageOps.pad(image, (size, size), method=bicubic, color=0)
    return image.resize((size, size), bicubic)


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
