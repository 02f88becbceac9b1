"""Model evaluation for inspection: predictions, confusion counts, top losses and their image files, without a UI."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from workbench.core.data.normalize import normalize
from workbench.core.inspection.grids import Cell, save_grid

__all__ = [
    "Predictions",
    "confusion_cell_indices",
    "predict",
    "save_confusion_cell",
    "save_predictions_grid",
    "top_losses",
]


@dataclass
class Predictions:
    probs: torch.Tensor  # (N, K) float32 CPU softmax of logits
    preds: torch.Tensor  # (N,) int64
    labels: torch.Tensor  # (N,)
    losses: torch.Tensor  # (N,) per-image cross entropy (no label smoothing)

    @property
    def confidences(self) -> torch.Tensor:
        """(N,) probability the model gave to the class it predicted."""
        return self.probs.gather(1, self.preds.unsqueeze(1)).squeeze(1)


def predict(
    model: torch.nn.Module,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    mean,
    std,
    *,
    device,
    batch_size: int = 512,
    dtype: torch.dtype = torch.float32,
) -> Predictions:
    """Class probabilities and per-image losses in eval mode and without autograd.

    Every submodule's train/eval flag is put back afterwards, exactly as it was. A `dtype`
    other than float32 runs the model under autocast to that dtype; outputs are float32.
    """
    if len(images_uint8) != len(labels):
        raise ValueError(f"{len(images_uint8)} images but {len(labels)} labels")
    if len(images_uint8) == 0:
        raise ValueError("no images to predict")
    device = torch.device(device)
    modes = [(module, module.training) for module in model.modules()]
    precision = contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)
    probs, losses = [], []
    model.eval()
    try:
        with torch.inference_mode(), precision:
            for start in range(0, len(images_uint8), batch_size):
                batch = images_uint8[start : start + batch_size].to(device, non_blocking=True)
                target = labels[start : start + batch_size].to(device, torch.int64, non_blocking=True)
                logits = model(normalize(batch, mean, std)).float()
                probs.append(logits.softmax(dim=1))
                losses.append(F.cross_entropy(logits, target, reduction="none"))
    finally:
        for module, training in modes:
            module.training = training
    # One copy to the host at the end, not one sync per batch.
    all_probs = torch.cat(probs).cpu()
    return Predictions(
        probs=all_probs,
        preds=all_probs.argmax(dim=1),
        labels=labels.detach().to("cpu", torch.int64),
        losses=torch.cat(losses).cpu(),
    )


def top_losses(pred: Predictions, k: int) -> torch.Tensor:
    """Positions of the k most confidently wrong images, most confident first.

    When fewer than k are wrong, the right ones with the highest loss fill the rest.
    """
    confidences = pred.confidences
    wrong = (pred.preds != pred.labels).nonzero().squeeze(1)
    ranked = wrong[confidences[wrong].argsort(descending=True, stable=True)]
    if len(ranked) < k:
        right = (pred.preds == pred.labels).nonzero().squeeze(1)
        ranked = torch.cat([ranked, right[pred.losses[right].argsort(descending=True, stable=True)]])
    return ranked[:k]


def confusion_cell_indices(pred: Predictions, true_class: int, predicted_class: int) -> torch.Tensor:
    """Positions, in data order, of the images of `true_class` predicted as `predicted_class`."""
    return ((pred.labels == true_class) & (pred.preds == predicted_class)).nonzero().squeeze(1)


def save_predictions_grid(
    path: Path,
    images_uint8: torch.Tensor,
    pred: Predictions,
    indices,
    classes: Sequence[str],
    sources: Sequence[str] | None = None,
    split_indices=None,
    title: str = "",
    meta: dict | None = None,
) -> Path:
    """A labelled grid of the images at `indices` (positions in images_uint8 and pred), via save_grid.

    Each cell records `split_indices[i]` as its data-set index when given, else the position i.
    Returns the sidecar path.
    """
    positions = torch.as_tensor(indices, dtype=torch.int64).flatten().cpu()
    confidences = pred.confidences
    cells = [
        Cell(
            index=int(split_indices[i]) if split_indices is not None else i,
            label=int(pred.labels[i]),
            source=None if sources is None else str(sources[i]),
            prediction=int(pred.preds[i]),
            confidence=float(confidences[i]),
        )
        for i in positions.tolist()
    ]
    images = images_uint8[positions.to(images_uint8.device)].cpu()
    return save_grid(Path(path), images, cells, classes, title=title, meta=meta)


def save_confusion_cell(
    run_images_dir: Path,
    images_uint8: torch.Tensor,
    pred: Predictions,
    true_class: int,
    predicted_class: int,
    classes: Sequence[str],
    sources: Sequence[str] | None = None,
    split_indices=None,
    limit: int = 64,
) -> Path | None:
    """Write confusion_<true>_as_<predicted>.png (most confident first) and return its path.

    Returns None when no image falls in that cell, so the caller can say so.
    """
    positions = confusion_cell_indices(pred, true_class, predicted_class)
    if positions.numel() == 0:
        return None
    shown = positions[pred.confidences[positions].argsort(descending=True, stable=True)][:limit]
    true_name, predicted_name = str(classes[true_class]), str(classes[predicted_class])
    name = f"confusion_{_file_safe(true_name, true_class)}_as_{_file_safe(predicted_name, predicted_class)}.png"
    path = Path(run_images_dir) / name
    title = f"true {true_name} predicted as {predicted_name}: {len(shown)} of {len(positions)}, most confident first"
    meta = {"true_class": true_class, "predicted_class": predicted_class, "total": len(positions)}
    save_predictions_grid(path, images_uint8, pred, shown, classes, sources, split_indices, title, meta)
    return path


def _file_safe(name: str, index: int) -> str:
    """A class name that is safe in a file name on any system; the class number if nothing is left."""
    return re.sub(r"[^\w-]+", "-", name).strip("-_") or f"class{index}"
