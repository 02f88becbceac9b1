"""CIFAR and MNIST-style data sets: download once into data_dir, read as uint8 tensors.

URLs, checksums and file names come from torchvision's dataset classes. CIFAR's python batches
are pickles, so they are read with the restricted unpickler in safe_pickle, never plain pickle.
"""

from __future__ import annotations

import http.client
import pickle
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import (
    check_integrity,
    download_and_extract_archive,
    extract_archive,
)

from workbench.core.data.safe_pickle import load_cifar_batch
from workbench.core.data.types import NAMED_SHAPES, Log, Split
from workbench.core.errors import WorkbenchError

_CIFAR = {"cifar10": (CIFAR10, b"labels"), "cifar100": (CIFAR100, b"fine_labels")}
_MNIST = {"mnist": MNIST, "fashion-mnist": FashionMNIST}
# URLError and socket errors are OSErrors; torchvision raises RuntimeError for a bad checksum.
_DOWNLOAD_ERRORS = (OSError, RuntimeError, ValueError, http.client.HTTPException)
_CIFAR_PIXELS = 3 * 32 * 32
_RESIZE_CHUNK = 2048  # images resized at a time


def load(
    name: str, data_dir: Path, image_size: int, download: bool, log: Log
) -> tuple[list[str], Split, Split]:
    """Classes, train and test splits of a built-in set, resized only if image_size differs."""
    folder = data_dir / name
    if name in _CIFAR:
        classes, train, test = _load_cifar(name, folder, download, log)
    else:
        classes, train, test = _load_mnist(name, folder, download, log)
    if image_size != NAMED_SHAPES[name][1]:
        log(f"resizing {name} to {image_size}x{image_size} (bicubic, antialiased)")
        train.images = resize(train.images, image_size)
        test.images = resize(test.images, image_size)
    return classes, train, test


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) to (N, C, size, size), bicubic with antialiasing when shrinking."""
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].float()
        chunk = F.interpolate(
            chunk, size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )
        out[start : start + _RESIZE_CHUNK] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out


# ---- CIFAR -------------------------------------------------------------------------------------


def _load_cifar(
    name: str, folder: Path, download: bool, log: Log
) -> tuple[list[str], Split, Split]:
    spec, label_key = _CIFAR[name]
    batches = folder / spec.base_folder
    train_files = [file_name for file_name, _ in spec.train_list]
    test_files = [file_name for file_name, _ in spec.test_list]
    needed = train_files + test_files + [spec.meta["filename"]]
    if not all((batches / file_name).is_file() for file_name in needed):
        mirror = spec.url.removesuffix(spec.filename)
        _fetch(name, folder, [mirror], [(spec.filename, spec.tgz_md5)], folder, download, log)
        missing = [file_name for file_name in needed if not (batches / file_name).is_file()]
        if missing:
            raise WorkbenchError(
                f"{folder / spec.filename} did not contain {batches / missing[0]}; "
                "delete the archive and run again"
            )
    meta = _read_pickle(batches / spec.meta["filename"], batches)
    try:
        classes = [label.decode("utf-8") for label in meta[spec.meta["key"].encode()]]
    except (KeyError, TypeError, AttributeError):
        raise WorkbenchError(_damaged(batches / spec.meta["filename"], batches)) from None
    train = _read_cifar_split(
        [batches / file_name for file_name in train_files], label_key, batches
    )
    test = _read_cifar_split([batches / file_name for file_name in test_files], label_key, batches)
    return classes, train, test


def _read_cifar_split(paths: list[Path], label_key: bytes, batches: Path) -> Split:
    pixels, labels = [], []
    for path in paths:
        entry = _read_pickle(path, batches)
        try:
            data, batch_labels = entry[b"data"], entry[label_key]
            valid = (
                isinstance(data, np.ndarray)
                and data.dtype == np.uint8
                and data.ndim == 2
                and data.shape[1] == _CIFAR_PIXELS
                and len(batch_labels) == data.shape[0]
            )
        except (KeyError, TypeError):
            valid = False
        if not valid:
            raise WorkbenchError(_damaged(path, batches))
        pixels.append(data)
        labels.extend(int(label) for label in batch_labels)
    # CIFAR rows hold the red plane, then green, then blue: exactly (3, 32, 32) in C order.
    images = torch.from_numpy(np.concatenate(pixels)).view(-1, 3, 32, 32).contiguous()
    return Split(images=images, labels=torch.tensor(labels, dtype=torch.int64), sources=None)


def _read_pickle(path: Path, batches: Path) -> Any:
    try:
        return load_cifar_batch(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise WorkbenchError(_damaged(path, batches, error)) from None


def _damaged(path: Path, folder: Path, error: Exception | None = None) -> str:
    reason = f" ({_one_line(error)})" if error is not None else ""
    return f"{path} is not a readable CIFAR batch{reason}; delete {folder} and run again"


# ---- MNIST and Fashion-MNIST -------------------------------------------------------------------


def _load_mnist(
    name: str, folder: Path, download: bool, log: Log
) -> tuple[list[str], Split, Split]:
    spec = _MNIST[name]
    raw = folder / spec.__name__ / "raw"  # where torchvision's own class would look

    def unpacked(archive_name: str) -> Path:
        return raw / archive_name.removesuffix(".gz")

    missing = [
        (file_name, md5) for file_name, md5 in spec.resources if not unpacked(file_name).is_file()
    ]
    if missing:
        _fetch(name, raw, list(spec.mirrors), missing, raw, download, log)
    splits = []
    for prefix in ("train", "t10k"):
        try:
            images = read_image_file(str(unpacked(f"{prefix}-images-idx3-ubyte")))
            labels = read_label_file(str(unpacked(f"{prefix}-labels-idx1-ubyte")))
        except (AssertionError, RuntimeError, ValueError, OSError) as error:
            raise WorkbenchError(
                f"{raw} holds a damaged {name} file ({_one_line(error)}); "
                f"delete {raw} and run again"
            ) from None
        splits.append(
            Split(images=images.unsqueeze(1).contiguous(), labels=labels.long(), sources=None)
        )
    return list(spec.classes), splits[0], splits[1]


# ---- downloads ---------------------------------------------------------------------------------


def _fetch(
    name: str,
    folder: Path,
    mirrors: list[str],
    archives: list[tuple[str, str]],
    extract_to: Path,
    download: bool,
    log: Log,
) -> None:
    """Make each (archive, md5) present and extracted: a verified local copy, else a download.

    mirrors are base URLs that the archive names are appended to, tried in order.
    """
    expected = ", ".join(archive for archive, _ in archives)
    for archive, md5 in archives:
        local = folder / archive
        if check_integrity(str(local), md5):
            log(f"extracting {local}")
            extract_archive(str(local), str(extract_to))
            continue
        if not download:
            raise WorkbenchError(
                f"{name} is not in {folder}: put {expected} there (from {mirrors[0]}), "
                "allow downloads, or use --dataset shapes"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WorkbenchError(
                f"cannot create {folder} for {name} ({_one_line(error)})"
            ) from None
        errors: list[Exception] = []
        for mirror in mirrors:
            url = mirror + archive
            log(f"downloading {url} into {folder}")
            try:
                download_and_extract_archive(
                    url,
                    download_root=str(folder),
                    extract_root=str(extract_to),
                    filename=archive,
                    md5=md5,
                )
                break
            except _DOWNLOAD_ERRORS as error:
                errors.append(error)
        else:
            raise WorkbenchError(
                f"could not download {name} ({_one_line(errors[-1])}); put {expected} "
                f"(from {mirrors[0]}) into {folder} and run again, "
                "or use --dataset shapes to train offline"
            )


def _one_line(error: BaseException) -> str:
    reason = error.reason if isinstance(error, URLError) else error
    text = " ".join(str(reason).split())
    return text or type(error).__name__
