"""Folder data sets too big to decode into memory: images decoded on demand, per batch.

Most data sets fit as uint8 tensors (CIFAR-10 is 150 MB) and are decoded once. When a
folder's decoded size would pass the limit (a quarter of this machine's memory unless
set), its splits hold a FileImages instead: indexing it decodes just those files, and
the engine streams batches through a DataLoader whose workers do the decoding.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch

from workbench.core.atomic import write_json_atomic
from workbench.core.data.folders import decode_image, find_unreadable
from workbench.core.data.normalize import channel_stats
from workbench.core.data.scan import MAX_WARNINGS, FolderScan
from workbench.core.data.types import Dataset, Log, Split, stratified_split
from workbench.core.errors import WorkbenchError, never_stop
from workbench.core.safe_read import MB, read_text

STATS_SAMPLE = 2000  # images decoded to estimate mean/std of a streamed training split


class FileImages(torch.utils.data.Dataset):
    """uint8 (C, size, size) images of a list of files, decoded when indexed.

    Unreadable files come back as None from an integer index (the streaming loader drops
    them and reports them) and as black images from a tensor index (for image grids).
    """

    def __init__(self, paths: list[str], image_size: int, resize: str = "stretch") -> None:
        self.paths = paths
        self.image_size = image_size
        self.resize = resize
        self.dtype = torch.uint8
        self.device = torch.device("cpu")  # where indexing returns its tensors, like a CPU tensor

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, int):
            return self.decode(index)
        if isinstance(index, slice):
            rows = list(range(len(self.paths)))[index]
        else:
            rows = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        blank = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
        decoded = [self.decode(row) for row in rows]
        return torch.stack([image if image is not None else blank for image in decoded])

    def subset(self, rows: torch.Tensor) -> FileImages:
        return FileImages([self.paths[row] for row in rows.tolist()], self.image_size, self.resize)

    def decode(self, row: int) -> torch.Tensor | None:
        try:
            return decode_image(Path(self.paths[row]), self.image_size, resize=self.resize)
        except (OSError, ValueError):
            return None


def limit_mb(setting_mb: float) -> float:
    """The decoded size above which a folder streams; 0 means a quarter of physical memory."""
    if setting_mb > 0:
        return setting_mb
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return total / 4 / 2**20


def decoded_mb(scan: FolderScan, image_size: int) -> float:
    count = len(scan.train_files) + len(scan.test_files or []) + len(scan.val_files or [])
    return count * 3 * image_size * image_size / 2**20


def streaming_dataset(
    name: str, scan: FolderScan, image_size: int, seed: int, test_fraction: float, log: Log,
    warn: Log, data_dir: Path, should_stop: Callable[[], bool] = never_stop, resize: str = "stretch",
) -> Dataset:
    """A Dataset whose splits decode on demand; mean/std come from a sample of training images.

    Unreadable files are found first (each file decoded once, no pixels kept; the list is
    cached by the folder's fingerprint) and left out, so a streamed folder skips and lists
    exactly the files the in-memory path would.
    """
    unreadable = _unreadable(scan, image_size, data_dir, log, should_stop, resize)
    for line in list(unreadable.items())[:MAX_WARNINGS]:
        warn(f"skipping unreadable image {line[0]}: {line[1]}")
    if len(unreadable) > MAX_WARNINGS:
        warn(f"... and {len(unreadable) - MAX_WARNINGS} more unreadable images skipped")

    def split(files: list[tuple[str, int]], folder: Path) -> Split:
        kept = [(path, label) for path, label in files if path not in unreadable]
        labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
        empty = [name for index, name in enumerate(scan.classes) if not (labels == index).any()]
        if empty:  # as the in-memory path says it
            raise WorkbenchError(f"class folder {folder / empty[0]} has no readable images (the log lists why)")
        paths = [path for path, _ in kept]
        return Split(FileImages(paths, image_size, resize), labels, paths)

    train = split(scan.train_files, scan.train_dir)
    val = split(scan.val_files, scan.val_dir) if scan.val_files is not None else None
    if scan.test_files is not None:
        test = split(scan.test_files, scan.test_dir)
    else:
        train_rows, test_rows = stratified_split(train.labels, test_fraction, seed)
        train, test = train.subset(train_rows), train.subset(test_rows)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randperm(len(train.labels), generator=generator)[:STATS_SAMPLE]
    mean, std = channel_stats(train.images[sample])
    log(f"mean/std estimated from {len(sample)} sampled training images")
    skipped = list(scan.skipped) + [f"{path}: {reason}" for path, reason in unreadable.items()]
    return Dataset(name, list(scan.classes), train, test, mean, std, skipped, val)


def _unreadable(scan: FolderScan, image_size: int, data_dir: Path, log: Log, should_stop, resize) -> dict[str, str]:
    every = [path for path, _ in scan.train_files + (scan.test_files or []) + (scan.val_files or [])]
    # The folder's own path is part of the key: a copy with the same name and files has its own record.
    key = json.dumps({"root": str(scan.root), "files": scan.fingerprint, "image_size": image_size, "resize": resize},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    record = Path(data_dir) / "cache" / f"{scan.root.name or 'folder'}-unreadable-{digest}.json"
    try:
        return dict(json.loads(read_text(record, 256 * MB)))
    except (OSError, ValueError, TypeError, WorkbenchError):  # absent, a pipe, damaged: check again
        pass
    log(f"checking that all {len(every):,} images can be decoded (once for this folder)")
    found = find_unreadable(every, image_size, should_stop, resize)
    try:
        write_json_atomic(record, found)
    except (OSError, WorkbenchError):
        pass  # only costs the check next time
    return found
