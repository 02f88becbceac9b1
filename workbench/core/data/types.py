"""What a loaded data set is: uint8 splits with labels, class names and train-split statistics."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

Log = Callable[[str], None]  # data loading reports progress (and, through a second one, warnings)

# (channels, native image size, classes) of each built-in data set.
NAMED_SHAPES: dict[str, tuple[int, int, int]] = {
    "shapes": (3, 32, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
    "mnist": (1, 28, 10),
    "fashion-mnist": (1, 28, 10),
}
FOLDER_IMAGE_SIZE = 32  # what image_size 0 means for a folder, whose images vary in size


@dataclass
class Split:
    images: Any  # uint8 (N, C, H, W) CPU tensor, or a FileImages that decodes when indexed
    labels: torch.Tensor  # int64, (N,)
    sources: list[str] | None  # source file path per image when it came from files, else None
    indices: torch.Tensor | None = None  # index of each image in its source data set; None = arange

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def source_index(self, positions: torch.Tensor) -> list[int]:
        """Data-set indices of positions in this split (a split may be a subset of its source)."""
        positions = torch.as_tensor(positions).cpu()
        if self.indices is None:
            return positions.tolist()
        return self.indices[positions].tolist()

    def subset(self, rows: torch.Tensor) -> Split:
        """The images at `rows` (sorted positions), remembering where each came from."""
        images = self.images.subset(rows) if hasattr(self.images, "subset") else self.images[rows].contiguous()
        origin = rows.clone() if self.indices is None else self.indices[rows]
        sources = None if self.sources is None else [self.sources[row] for row in rows.tolist()]
        return Split(images=images, labels=self.labels[rows].clone(), sources=sources, indices=origin)


@dataclass
class Dataset:
    name: str  # "shapes", "cifar10", ... or the folder path as given
    classes: list[str]
    train: Split
    test: Split
    mean: tuple[float, ...]  # per channel, in [0, 1] units, from the train split only
    std: tuple[float, ...]
    skipped: list[str] = field(default_factory=list)  # "path: reason" per unreadable file
    val: Split | None = None  # held out from the training data for model selection; None = no selection
    identity: dict[str, str] = field(default_factory=dict)  # class -> digest of its files (folders only)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_validation(self, fraction: float, seed: int) -> Dataset:
        """A copy whose train split gives up a stratified `fraction` of each class as `val`.

        mean/std stay those of the training data as given (validation images included): they
        are the input format, the same whatever the fraction, and never see a test image.
        """
        if fraction <= 0 or self.val is not None:
            return self
        train_rows, val_rows = stratified_split(self.train.labels, fraction, seed)
        return replace(self, train=self.train.subset(train_rows), val=self.train.subset(val_rows))


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (kept, held out), each sorted: about `fraction` of every class is held out.

    A class with two or more images keeps at least one on each side.
    """
    generator = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        count = min(max(round(len(members) * fraction), 1), len(members) - 1)
        held.append(members[:count])
        kept.append(members[count:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values
