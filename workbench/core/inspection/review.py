"""A finished run's model and test predictions, loaded once, for drilling into its errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.core import runs
from workbench.core.data.load import load_dataset
from workbench.core.data.types import Dataset
from workbench.core.export.bundle import model_from_checkpoint
from workbench.core.inspection.predictions import (
    Predictions,
    predict,
    save_confusion_cell,
)
from workbench.core.inspection.summary import LayerRow, mark_training, model_summary
from workbench.core.metrics import confusion_matrix


@dataclass
class Review:
    run_dir: Path
    data: Dataset
    predictions: Predictions
    model: torch.nn.Module

    @property
    def classes(self) -> list[str]:
        return list(self.data.classes)

    def confusion(self) -> torch.Tensor:
        return confusion_matrix(self.predictions.labels, self.predictions.preds, self.data.num_classes)

    def write_cell(self, true_class: int, predicted_class: int) -> Path | None:
        """Write confusion_<true>_as_<pred>.png into the run's images/; None for an empty cell."""
        test = self.data.test
        return save_confusion_cell(
            self.run_dir / "images", test.images, self.predictions, true_class, predicted_class,
            self.classes, sources=test.sources, split_indices=test.indices,
        )

    def layers(self) -> list[LayerRow]:
        rows = model_summary(self.model, self.data.channels, self.data.image_size)
        config = runs.read_config(self.run_dir)
        if config.recipe != "finetune":
            return rows
        return mark_training(rows, self.model, config.freeze_epochs, config.backbone_lr_mult, config.batchnorm)


def load_review(run_dir: Path, which: str = "best", device: str = "cpu") -> Review:
    """Rebuild the run's model from its checkpoint and predict its whole test split."""
    model, _, info = model_from_checkpoint(run_dir, which)
    config = runs.read_config(run_dir)
    data = load_dataset(
        config.dataset, data_dir=config.resolved_data_dir(), image_size=info["image_size"],
        seed=config.seed, test_fraction=config.test_fraction, val_fraction=config.val_fraction, download=False,
        resize=config.resize,
    )
    target = torch.device(device)
    model = model.to(target)
    predictions = predict(
        model, data.test.images, data.test.labels, info["mean"], info["std"], device=target
    )
    return Review(run_dir, data, predictions, model)
