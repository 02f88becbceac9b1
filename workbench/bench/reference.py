"""The seed-style side of `workbench bench`: the image files both sides read, and a plain PyTorch loop.

The loop is written the way the seed tutorials write it (ImageFolder + PIL transforms +
DataLoader workers, fp32, `loss.item()` every step, a test pass in eval mode each epoch),
so the engine is measured against what people actually run, not against a strawman.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from workbench.core.config import DATASET_NAMES, RunConfig
from workbench.core.data.load import load_dataset
from workbench.core.data.types import FOLDER_IMAGE_SIZE, Dataset, Split
from workbench.core.errors import WorkbenchError
from workbench.core.models import create

try:
    import resource
except ImportError:  # Windows: no CPU times of child processes, so workers go uncounted
    resource = None

WARMUP_STEPS = 3  # steps each side trains a throwaway model before the clock starts
_WRITE_THREADS = 4  # PNG files written at once
Limits = tuple[int | None, int | None]  # (train, test) images to use; None = all


@dataclass
class EpochTiming:
    """One timed epoch of either side."""

    epoch: int
    train_images: int
    train_s: float  # the training loop alone
    eval_s: float  # the test pass alone
    wall_s: float  # the whole epoch as a user waits for it (for the engine: with checkpoints and images)
    cpu_s: float  # CPU time of that whole epoch, worker processes included: fair even on a busy machine
    test_acc: float

    @property
    def images_per_s(self) -> float:
        return self.train_images / max(self.train_s, 1e-9)


@dataclass
class SideResult:
    """What one side measured, epoch by epoch."""

    name: str
    epochs: list[EpochTiming] = field(default_factory=list)
    time_to_target_s: float | None = None  # None: target not given or not reached

    @property
    def images_per_s(self) -> float:
        """Training throughput over every timed epoch: all train images over all train time."""
        images = sum(e.train_images for e in self.epochs)
        return images / max(sum(e.train_s for e in self.epochs), 1e-9)

    @property
    def epoch_s(self) -> float:
        """Mean wall time of an epoch including evaluation."""
        return sum(e.wall_s for e in self.epochs) / max(len(self.epochs), 1)

    @property
    def epoch_cpu_s(self) -> float:
        return sum(e.cpu_s for e in self.epochs) / max(len(self.epochs), 1)

    def to_dict(self) -> dict:
        return {
            "images_per_s": self.images_per_s,
            "epoch_s": self.epoch_s,
            "epoch_cpu_s": self.epoch_cpu_s,
            "time_to_target_s": self.time_to_target_s,
            "final_test_acc": self.epochs[-1].test_acc if self.epochs else None,
            "epochs": [
                {
                    "epoch": e.epoch, "train_images": e.train_images, "train_s": e.train_s,
                    "images_per_s": e.images_per_s, "eval_s": e.eval_s, "wall_s": e.wall_s,
                    "cpu_s": e.cpu_s, "test_acc": e.test_acc,
                }
                for e in self.epochs
            ],
        }


# ---- choosing and writing the files ---------------------------------------------------------


def even_per_class(labels: torch.Tensor, limit: int | None) -> torch.Tensor:
    """Sorted row indices: at most `limit` rows, split evenly over classes, evenly spaced in each."""
    if limit is None or limit >= len(labels):
        return torch.arange(len(labels))
    classes = labels.unique(sorted=True).tolist()
    chosen = []
    for place, label in enumerate(classes):
        quota = limit // len(classes) + (1 if place < limit % len(classes) else 0)
        members = (labels == label).nonzero().squeeze(1)
        take = min(quota, len(members))
        # Evenly spaced rather than the first N, so sorted or grouped source files stay mixed.
        spots = torch.linspace(0, len(members) - 1, take).round().long() if take else members[:0]
        chosen.append(members[spots])
    return torch.cat(chosen).sort().values


def class_folder_names(classes: Sequence[str]) -> list[str]:
    """File-system-safe folder names that sort in class order (ImageFolder sorts by name)."""
    width = len(str(len(classes) - 1))
    return [f"{i:0{width}d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}" for i, name in enumerate(classes)]


def export_pngs(split: Split, rows: torch.Tensor, classes: Sequence[str], folder: Path) -> dict[str, int]:
    """Write the chosen rows as `folder/<class>/<row>.png` (lossless); returns files per class folder."""
    names = class_folder_names(classes)
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    pixels = split.images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C) views, no copy
    labels = split.labels.tolist()

    def write(row: int) -> str:
        image = pixels[row, :, :, 0] if pixels.shape[-1] == 1 else pixels[row]
        name = names[labels[row]]
        Image.fromarray(np.ascontiguousarray(image)).save(folder / name / f"{row:06d}.png")
        return name

    # Creating small files is mostly waiting on the file system, which threads overlap.
    with ThreadPoolExecutor(max_workers=_WRITE_THREADS) as pool:
        written = list(pool.map(write, rows.tolist()))
    return {name: written.count(name) for name in names}


def link_files(files: Sequence[tuple[str, int]], rows: torch.Tensor, classes: Sequence[str], folder: Path) -> int:
    """Symlink the chosen (path, label) files as `folder/<class>/<n>_<name>`; returns how many."""
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for row in rows.tolist():
        path, label = files[row]
        # The row number keeps names unique when class folders have nested subfolders.
        os.symlink(os.path.abspath(path), folder / classes[label] / f"{row:06d}_{os.path.basename(path)}")
    return len(rows)


# ---- the folder both sides read ------------------------------------------------------------


@dataclass
class BenchData:
    folder: Path  # has train/<class>/* and test/<class>/*
    dataset: Dataset  # the engine's decoded copy of `folder` (sizes and mean/std for both sides)
    engine_data_dir: Path  # where that decoded copy is cached, for the engine's own load
    resize: bool  # the files are not image_size: the reference must resize them
    source: str  # how `folder` was made, in words


def prepare_data(
    config: RunConfig, max_images: int | None, max_test_images: int | None, workdir: Path, log: Callable[[str], None]
) -> BenchData:
    """Make (or find) the image files, then decode them once for the engine, untimed."""
    limits = (max_images, max_test_images)
    if config.dataset in DATASET_NAMES:
        folder, size, source = _export_named(config, limits, workdir / "data", log)
        engine_data_dir, resize = workdir / "cache", False
    else:
        folder, source, linked = _folder_for(config, limits, workdir / "data")
        size = FOLDER_IMAGE_SIZE
        # A folder used as it is keeps its decoded cache in the user's data dir, so the next bench
        # (or train) finds it; a temporary tree of links would only litter it.
        engine_data_dir = workdir / "cache" if linked else config.resolved_data_dir()
        resize = _first_image_size(folder / "train") != (size, size)
    dataset = load_dataset(str(folder), data_dir=engine_data_dir, image_size=size, log=log)
    return BenchData(folder, dataset, engine_data_dir, resize, source)


def _export_named(config: RunConfig, limits: Limits, folder: Path, log) -> tuple[Path, int, str]:
    """Write a built-in set's chosen images as PNG files, so the reference reads files like the seed did."""
    source = load_dataset(config.dataset, data_dir=config.resolved_data_dir(), log=log)
    _check_limit(limits[0], len(source.classes))
    train_rows = even_per_class(source.train.labels, limits[0])
    test_rows = even_per_class(source.test.labels, limits[1])
    log(f"writing {len(train_rows) + len(test_rows)} PNG files of {config.dataset} to {folder}")
    export_pngs(source.train, train_rows, source.classes, folder / "train")
    export_pngs(source.test, test_rows, source.classes, folder / "test")
    return folder, source.image_size, f"{config.dataset} written as PNG files"


def _folder_for(config: RunConfig, limits: Limits, links: Path) -> tuple[Path, str, bool]:
    """The folder itself when both splits are used whole; otherwise a tree of links to the chosen files."""
    from workbench.core.data.scan import scan as scan_folder
    from workbench.core.data.types import stratified_split

    scan = scan_folder(Path(config.dataset).expanduser())
    _check_limit(limits[0], len(scan.classes))
    train_files, test_files = scan.train_files, scan.test_files
    if test_files is None:  # hold out the same files the engine would on the folder itself
        labels = torch.tensor([label for _, label in train_files])
        train_rows, test_rows = stratified_split(labels, config.test_fraction, config.seed)
        test_files = [train_files[row] for row in test_rows.tolist()]
        train_files = [train_files[row] for row in train_rows.tolist()]
    train_rows = even_per_class(torch.tensor([label for _, label in train_files]), limits[0])
    test_rows = even_per_class(torch.tensor([label for _, label in test_files]), limits[1])
    if scan.test_files is not None and len(train_rows) == len(train_files) and len(test_rows) == len(test_files):
        return scan.root, str(scan.root), False
    link_files(train_files, train_rows, scan.classes, links / "train")
    link_files(test_files, test_rows, scan.classes, links / "test")
    return links, f"links to files chosen from {scan.root}", True


def _check_limit(max_images: int | None, classes: int) -> None:
    if max_images is not None and max_images < classes:
        raise WorkbenchError(f"--max-images: {max_images} is fewer than the data set's {classes} classes")


def _first_image_size(train_dir: Path) -> tuple[int, int]:
    first_class = min(p for p in train_dir.iterdir() if p.is_dir())
    first_file = min(p for p in first_class.rglob("*") if p.is_file())
    with Image.open(first_file) as image:
        return image.size


# ---- the loop ------------------------------------------------------------------------------


def optimizer_for(name: str, params, lr: float, momentum: float) -> torch.optim.Optimizer:
    """The tutorial way: the optimizer class with the learning rate (and momentum for SGD)."""
    if name in ("sgd", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=name == "nesterov")
    return (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(params, lr=lr)


def transforms_for(augment: Sequence[str], image_size: int, resize: bool, mean, std):
    """(train, test) transforms matching the engine's work: PIL/tensor ops per image instead of per batch."""
    from torchvision import transforms as T

    first = [T.Resize((image_size, image_size))] if resize else []
    geometric = []
    if "crop" in augment:
        geometric.append(T.RandomCrop(image_size, padding=4))
    if "rotate" in augment:
        geometric.append(T.RandomRotation(15))
    if "flip" in augment:
        geometric.append(T.RandomHorizontalFlip())
    last = [T.ToTensor(), T.Normalize(mean, std)]
    if "cutout" in augment:  # an 8-pixel square (at 32 px) set to 0, the mean once normalised
        share = (8 / 32) ** 2
        last.append(T.RandomErasing(p=1.0, scale=(share, share), ratio=(1.0, 1.0), value=0))
    return T.Compose(first + geometric + last), T.Compose(first + last[:2])


def run_reference(
    folder: Path,
    *,
    arch: str,
    epochs: int,
    batch_size: int,
    workers: int,
    device: torch.device,
    optimizer_name: str,
    lr: float,
    momentum: float,
    augment: Sequence[str],
    image_size: int,
    resize: bool,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int,
    target_acc: float | None,
    on_epoch: Callable[[EpochTiming], None] = lambda timing: None,
) -> SideResult:
    """Train `arch` on folder/train, test on folder/test each epoch, timing both."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    train_transform, test_transform = transforms_for(augment, image_size, resize, list(mean), list(std))
    train_set = ImageFolder(str(folder / "train"), transform=train_transform)
    test_set = ImageFolder(str(folder / "test"), transform=test_transform)
    pin = device.type == "cuda"
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=pin)
    test_loader = DataLoader(test_set, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin)
    num_classes = len(train_set.classes)
    criterion = nn.CrossEntropyLoss()

    _warm_up(train_loader, create(arch, 3, num_classes, image_size).to(device), criterion, device, lr)

    torch.manual_seed(seed)  # the engine seeds the same way before building its model
    model = create(arch, 3, num_classes, image_size).to(device)
    optimizer = optimizer_for(optimizer_name, model.parameters(), lr, momentum)
    result = SideResult("reference")
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_started, cpu_started = time.perf_counter(), cpu_seconds()
        model.train()
        running_loss, seen = 0.0, 0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()  # the seed's habit: one host sync per step
            seen += labels.size(0)
        train_s = time.perf_counter() - epoch_started
        eval_started = time.perf_counter()
        acc = _test_accuracy(model, test_loader, device)
        done = time.perf_counter()
        # Each loop's workers have exited and been joined by now, so their CPU time is counted.
        cpu_s = cpu_seconds() - cpu_started
        timing = EpochTiming(epoch, seen, train_s, done - eval_started, done - epoch_started, cpu_s, acc)
        result.epochs.append(timing)
        if target_acc is not None and result.time_to_target_s is None and acc >= target_acc:
            result.time_to_target_s = done - started
        on_epoch(timing)
    return result


def cpu_seconds() -> float:
    """CPU time of this process and of its finished (joined) child processes, such as DataLoader workers."""
    if resource is None:
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _warm_up(loader, model: nn.Module, criterion: nn.Module, device: torch.device, lr: float) -> None:
    """A few steps through the real loader on a throwaway model: kernels, allocator, first worker start."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for step, (images, labels) in enumerate(loader):
        if step == WARMUP_STEPS:
            break
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        criterion(model(images), labels).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _test_accuracy(model: nn.Module, loader, device: torch.device) -> float:
    model.eval()
    correct, total = 0, 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            correct += (model(images).argmax(dim=1) == labels).sum().item()
            total += labels.size(0)
    return correct / max(total, 1)
