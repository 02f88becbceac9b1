"""Image folders in ImageFolder layout: find the image files of each split and class, without decoding.

Layouts: `<root>/train/<class>/*` with `<root>/test/<class>/*` (or `val/`; with both, val/ is
the validation split), or `<root>/<class>/*`. Every real file is found once, whatever links
lead to it; links to nothing, link loops and anything that is not a regular file are skipped
and listed, so a scan always ends and decoding never blocks on a pipe.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from workbench.core.data.types import Log
from workbench.core.errors import WorkbenchError

TEST_FOLDER_NAMES = ("test", "val")  # the first one present is the test split
MAX_WARNINGS = 10  # skipped files listed one by one; the rest are counted


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


def class_digests(scan: FolderScan) -> dict[str, str]:
    """Per class, a digest of its files (split, path inside the class folder, bytes, mtime): the
    same files in the same class folders give the same digests (copies that keep their times,
    like `cp -a` or tar, too), and a renamed, swapped, added, removed or rewritten image changes
    its class's. Swapped folders keep their files' own times, so a swap always shows."""
    import hashlib

    by_class: dict[str, list[str]] = {name: [] for name in scan.classes}
    for split, files in (("train", scan.train_files), ("test", scan.test_files), ("val", scan.val_files)):
        for path, label in files or []:
            name = scan.classes[label]
            inside = path.split(os.sep + name + os.sep, 1)[-1]
            status = os.stat(path)
            by_class[name].append(f"{split}/{inside}/{status.st_size}/{status.st_mtime_ns}")
    return {name: hashlib.sha256("\n".join(sorted(lines)).encode("utf-8", "surrogateescape")).hexdigest()[:16]
            for name, lines in by_class.items()}


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
    if not _utf8(str(root)):
        raise WorkbenchError(f"the data set path {_shown(str(root))} is not valid UTF-8; rename it", field="dataset")
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
        found = sorted(entry for entry in parent.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    except OSError as error:
        raise WorkbenchError(f"cannot list {parent} ({error.strerror or error})", field="dataset") from None
    for folder in found:
        if not _utf8(folder.name):  # class names go into JSON, TOML and pictures: they must be text
            raise WorkbenchError(f"class folder {_shown(str(folder))} has a name that is not valid UTF-8; rename it",
                                 field="dataset")
    return found


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _shown(text: str) -> str:
    """A path with undecodable bytes, printable: each such byte as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _scan_classes(parent: Path, root: Path, skipped: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    files: list[tuple[str, int]] = []
    classes = []
    seen: dict[tuple[int, int], str] = {}  # real files of this split, by (device, inode)
    class_folders = _class_folders(parent, root)
    # A link from one class folder into another (or into the split) must not relabel its files.
    others = {_inode(path) for path in [parent, *class_folders]}
    for label, folder in enumerate(class_folders):
        inside = (os.path.realpath(root), os.path.realpath(folder))
        images = _image_files(folder, seen, skipped, others - {_inode(folder)}, inside)
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
    folder: Path, seen: dict[tuple[int, int], str], skipped: list[str], forbidden: set[tuple[int, int]],
    inside: tuple[str, ...] = (),
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
                    if entry.is_symlink() and inside and not _within(os.path.realpath(entry.path), inside):
                        skipped.append(f"{_shown(entry.path)}: a link to a folder outside the data set")
                    else:
                        pending.append(entry.path)
                    continue
            except OSError:
                pass
            if not entry.name.lower().endswith(IMG_EXTENSIONS):
                continue
            if not _utf8(entry.path):
                skipped.append(f"{_shown(entry.path)}: its name is not valid UTF-8")
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


def _within(path: str, folders: tuple[str, ...]) -> bool:
    return any(path == folder or path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders)


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
