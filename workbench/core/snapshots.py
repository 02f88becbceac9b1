"""Which inspection images a run writes at the end of an epoch, and writing them."""

from __future__ import annotations

from pathlib import Path

import torch

from workbench.core.data import Dataset, Split
from workbench.core.images import Cell, save_confusion, save_grid, to_uint8
from workbench.core.inspect import Predictions, save_predictions_grid, top_losses
from workbench.core.steps import EvalResult

GRID_IMAGES = 64  # cells per grid: enough to see patterns, small enough to read
IMAGES_EVERY = 10  # epochs between image sets, besides the first and the last


def images_due(epoch: int, epochs: int) -> bool:
    return epoch == 1 or epoch == epochs or epoch % IMAGES_EVERY == 0


def predictions_of(evaluation: EvalResult, split: Split) -> Predictions:
    return Predictions(
        probs=evaluation.probs,
        preds=evaluation.preds,
        labels=split.labels.cpu(),
        losses=evaluation.losses,
    )


def split_index(split: Split, positions: torch.Tensor) -> list[int]:
    """Data-set indices of split positions (a split may be a subset of its source)."""
    if split.indices is None:
        return positions.tolist()
    return split.indices[positions].tolist()


def save_epoch_images(
    folder: Path,
    epoch: int,
    data: Dataset,
    evaluation: EvalResult,
    first_batch: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    final: bool,
) -> list[Path]:
    """Write this epoch's grids; returns the PNG paths written."""
    written: list[Path] = []
    if first_batch is not None:
        written.append(_save_augmented(folder / f"augmented_epoch{epoch:03d}.png", data, first_batch))
    predictions = predictions_of(evaluation, data.test)
    test = data.test
    shown = _spread_sample(len(test.labels), GRID_IMAGES)
    save_predictions_grid(
        folder / f"predictions_epoch{epoch:03d}.png", test.images, predictions, shown,
        data.classes, sources=test.sources, split_indices=test.indices,
        title=f"test predictions, epoch {epoch}",
    )
    written.append(folder / f"predictions_epoch{epoch:03d}.png")
    save_predictions_grid(
        folder / "top_losses.png", test.images, predictions, top_losses(predictions, GRID_IMAGES),
        data.classes, sources=test.sources, split_indices=test.indices,
        title=f"most confidently wrong, epoch {epoch}",
    )
    written.append(folder / "top_losses.png")
    save_confusion(folder / "confusion.png", evaluation.confusion, data.classes,
                   title=f"confusion matrix, epoch {epoch}")
    written.append(folder / "confusion.png")
    return written


def _save_augmented(path: Path, data: Dataset, first_batch: tuple[torch.Tensor, torch.Tensor]) -> Path:
    images, positions = first_batch
    images, positions = images[:GRID_IMAGES], positions[:GRID_IMAGES]
    train = data.train
    indices = split_index(train, positions)
    cells = [
        Cell(
            index=index,
            label=int(train.labels[position]),
            source=train.sources[position] if train.sources else None,
        )
        for index, position in zip(indices, positions.tolist())
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
