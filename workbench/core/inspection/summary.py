"""Text-free descriptions of a model and a data set, for tables in the app and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from workbench.core.data.types import Dataset
from workbench.core.inspection.grids import Cell, save_grid


@dataclass(frozen=True)
class LayerRow:
    name: str  # dotted module path, e.g. "layer1.0.conv1"
    kind: str  # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int  # parameters owned directly by this module
    depth: int  # nesting level, for indentation
    trains: str = ""  # fine-tuning: when the layer trains ("every epoch", "from epoch 3 at 0.1 x the lr")


def mark_training(rows: list[LayerRow], model: nn.Module, freeze_epochs: int, backbone_lr_mult: float,
                  batchnorm: str) -> list[LayerRow]:
    """The rows of a fine-tuned network with when each layer trains: the head every epoch, the
    backbone after --freeze-epochs at its share of the rate (BatchNorm statistics as chosen)."""
    import dataclasses

    from workbench.core.models.head import head_name

    head = head_name(model)
    later = f"from epoch {freeze_epochs + 1}, " if freeze_epochs else ""
    backbone = f"{later}{backbone_lr_mult:g}× lr"
    norms = {name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)}

    def trains(row: LayerRow) -> str:
        if not row.params:
            return ""
        if row.name == head:
            return "always (head)"
        if row.name in norms and batchnorm == "frozen":
            return f"{backbone}, stats kept"
        return backbone

    return [dataclasses.replace(row, trains=trains(row)) for row in rows]


def model_summary(model: nn.Module, in_channels: int, image_size: int) -> list[LayerRow]:
    """One row per leaf module with its output shape, from a forward pass on one zero image.

    Runs in eval mode under inference mode, on a copy of nothing: the model's own mode is
    restored afterwards, and BatchNorm statistics are not touched (eval mode).
    """
    rows: list[LayerRow] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            hooks.append(module.register_forward_hook(_recorder(rows, name, module)))
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, in_channels, image_size, image_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return rows


def _recorder(rows: list[LayerRow], name: str, module: nn.Module):
    def record(_module, _inputs, output):
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        own = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerRow(name, type(module).__name__, shape, own, name.count(".")))

    return record


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    classes: list[str]
    train_counts: list[int]
    test_counts: list[int]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    skipped: int
    val_counts: list[int] | None = None  # held out of the training data; None: the run held none out


def dataset_summary(data: Dataset) -> DatasetSummary:
    k = data.num_classes
    return DatasetSummary(
        name=data.name,
        classes=list(data.classes),
        train_counts=torch.bincount(data.train.labels, minlength=k).tolist(),
        test_counts=torch.bincount(data.test.labels, minlength=k).tolist(),
        channels=data.channels,
        image_size=data.image_size,
        mean=data.mean,
        std=data.std,
        skipped=len(data.skipped),
        val_counts=torch.bincount(data.val.labels, minlength=k).tolist() if data.val is not None else None,
    )


def save_sample_grid(path: Path, data: Dataset, per_class: int = 8) -> Path:
    """The first `per_class` training images of each class, raw uint8 pixels, one row per class."""
    positions = []
    for label in range(data.num_classes):
        found = (data.train.labels == label).nonzero().flatten()[:per_class]
        positions.extend(found.tolist())
    index = torch.tensor(positions, dtype=torch.long)
    train = data.train
    cells = [
        Cell(
            index=int(train.indices[p]) if train.indices is not None else p,
            label=int(train.labels[p]),
            source=train.sources[p] if train.sources else None,
        )
        for p in positions
    ]
    save_grid(
        path, train.images[index], cells, data.classes, columns=per_class,
        title=f"{data.name}: raw training images (no normalisation, no augmentation)",
    )
    return path
