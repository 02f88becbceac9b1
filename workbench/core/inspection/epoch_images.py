"""Which inspection images a run writes at the end of an epoch, and writing them."""

from __future__ import annotations

from pathlib import Path

import torch

from workbench.core.data.normalize import to_uint8
from workbench.core.data.types import Dataset, Split
from workbench.core.inspection.grids import Cell, save_confusion, save_grid
from workbench.core.inspection.predictions import (
    Predictions,
    save_predictions_grid,
    top_losses,
)

GRID_IMAGES = 64  # cells per grid: enough to see patterns, small enough to read
IMAGES_EVERY = 10  # epochs between image sets, besides the first and the last
SPLIT_NAMES = {"val": "validation", "test": "test"}


def images_due(epoch: int, epochs: int) -> bool:
    return epoch == 1 or epoch == epochs or epoch % IMAGES_EVERY == 0


def predictions_of(evaluation, split: Split) -> Predictions:
    """An engine EvalResult (probs, losses) as Predictions on `split`'s labels."""
    return Predictions(
        probs=evaluation.probs,
        preds=evaluation.preds,
        labels=split.labels.cpu(),
        losses=evaluation.losses,
    )


def save_epoch_images(
    folder: Path,
    epoch: int,
    data: Dataset,
    evaluation,
    first_batch: tuple[torch.Tensor, torch.Tensor] | None,
) -> list[Path]:
    """Write this epoch's grids: the augmented batch, and for the evaluated split (an engine
    EvalResult, or None) predictions, top losses and confusion. Returns the PNG paths."""
    written: list[Path] = []
    if first_batch is not None:
        written.append(_save_augmented(folder / f"augmented_epoch{epoch:03d}.png", data, first_batch))
    if evaluation is None:
        return written
    split = data.val if evaluation.split == "val" else data.test
    if len(evaluation.positions) != len(split):  # streamed files that failed to decode were left out
        split = split.subset(evaluation.positions)
    name = SPLIT_NAMES[evaluation.split]
    predictions = predictions_of(evaluation, split)
    shown = _spread_sample(len(split.labels), GRID_IMAGES)
    common = dict(sources=split.sources, split_indices=split.indices, meta={"split": evaluation.split, "epoch": epoch})
    path = folder / f"predictions_epoch{epoch:03d}.png"
    save_predictions_grid(path, split.images, predictions, shown, data.classes,
                          title=f"{name} predictions, epoch {epoch}", **common)
    written.append(path)
    save_predictions_grid(folder / "top_losses.png", split.images, predictions, top_losses(predictions, GRID_IMAGES),
                          data.classes, title=f"{name}: most confidently wrong, epoch {epoch}", **common)
    written.append(folder / "top_losses.png")
    save_confusion(folder / "confusion.png", evaluation.confusion, data.classes,
                   title=f"{name} confusion matrix, epoch {epoch}")
    written.append(folder / "confusion.png")
    return written


def _save_augmented(path: Path, data: Dataset, first_batch: tuple[torch.Tensor, torch.Tensor]) -> Path:
    images, positions = first_batch
    images, positions = images[:GRID_IMAGES], positions[:GRID_IMAGES]
    train = data.train
    cells = [
        Cell(
            index=index,
            label=int(train.labels[position]),
            source=train.sources[position] if train.sources else None,
        )
        for index, position in zip(train.source_index(positions), positions.tolist())
    ]
    save_grid(
        path, to_uint8(images, data.mean, data.std), cells, data.classes,
        title="training batch as augmented (exact pixels)",
        meta={"split": "train", "mean": list(data.mean), "std": list(data.std)},
    )
    return path


def _spread_sample(count: int, wanted: int) -> torch.Tensor:
    """Evenly spaced positions: a fixed, class-mixed sample that stays the same every epoch."""
    if count <= wanted:
        return torch.arange(count)
    return torch.linspace(0, count - 1, wanted).round().long()
