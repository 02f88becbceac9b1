"""Classification metrics from labels and predictions: the one confusion matrix and what follows from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int, *, check: bool = True) -> torch.Tensor:
    """(K, K) int64 counts on the inputs' device, rows true class, columns predicted class.

    `check` validates the class range, which reads the values back: pass False in a training
    loop on a GPU, where that read would make the host wait.
    """
    labels = torch.as_tensor(labels).detach().flatten().to(torch.int64)
    preds = torch.as_tensor(preds).detach().flatten().to(labels.device, torch.int64)
    if labels.shape != preds.shape:
        raise ValueError(f"{labels.numel()} labels but {preds.numel()} predictions")
    if check and labels.numel():
        low, high = min(labels.min(), preds.min()), max(labels.max(), preds.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"labels and predictions must lie in 0..{num_classes - 1}")
    pairs = labels * num_classes + preds
    return torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor) -> list[float]:
    """Diagonal over row sums (recall per class); a class with no samples gets 0.0, not NaN."""
    counts = torch.as_tensor(matrix).detach().cpu().to(torch.float64)
    support = counts.sum(dim=1)
    accuracy = torch.where(support > 0, counts.diagonal() / support.clamp(min=1), torch.zeros_like(support))
    return [float(value) for value in accuracy]


@dataclass(frozen=True)
class ClassReport:
    name: str
    support: int  # images of this class
    correct: int
    predicted: int  # images predicted as this class
    precision: float  # correct / predicted (0 when never predicted)
    recall: float  # correct / support, the per-class accuracy
    f1: float


def class_reports(matrix: torch.Tensor, classes: Sequence[str]) -> list[ClassReport]:
    """Precision, recall and F1 of every class from a (K, K) confusion matrix."""
    counts = torch.as_tensor(matrix).detach().cpu().to(torch.int64)
    reports = []
    for index, name in enumerate(classes):
        correct = int(counts[index, index])
        support = int(counts[index].sum())
        predicted = int(counts[:, index].sum())
        precision = correct / predicted if predicted else 0.0
        recall = correct / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        reports.append(ClassReport(str(name), support, correct, predicted, precision, recall, f1))
    return reports
