"""The seed tutorials' table, reproduced: what each row needs, the seed's mistake, the table's text.

Each row trains one architecture twice with the seed's recipe (seed-recipe preset): once under
the seed's own conditions (ToTensor only: pixels / 255, no normalisation) and once with the
training split's mean/std (the lesson). The seed's mistake is a row of its own: convbn trained
as the seed trained it, then evaluated in train mode (BatchNorm on each batch's statistics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

from workbench.core.data.normalize import normalize

# The seed documents' CIFAR-10 test accuracy after 4 epochs of Adam 0.003, batch 32.
SEED_ACCURACY: dict[str, float] = {
    "linear": 0.32, "mlp": 0.25, "basic_cnn": 0.53, "convbn": 0.658, "deepbn": 0.711, "seed_resnet": 0.733,
}
SEED_TRAIN_MODE_ACCURACY = 0.133  # convbn when the seed forgot model.eval()
MISTAKE_ARCH = "convbn"
CONDITIONS = ("faithful", "normalised")  # the seed's conditions; with train-split mean/std
NORMALIZE = {"faithful": "none", "normalised": "train"}  # RunConfig.normalize per condition
SEED_EVAL_BATCH = 32


@dataclass
class Row:
    """One architecture's line: the seed's figure and ours per condition (None until trained)."""

    arch: str
    seed: float
    params: int | None = None
    faithful: float | None = None
    normalised: float | None = None
    seconds: float = 0.0  # training time of the runs done, device clock
    runs: dict[str, str] = field(default_factory=dict)  # condition -> run folder
    note: str = ""

    @property
    def done(self) -> bool:
        return self.faithful is not None and self.normalised is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "faithful_minus_seed": _minus(self.faithful, self.seed),
                "normalised_minus_faithful": _minus(self.normalised, self.faithful)}


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def new_rows(archs: list[str]) -> list[Row]:
    rows = [Row(arch, SEED_ACCURACY[arch]) for arch in archs]
    if MISTAKE_ARCH in archs:
        rows.append(Row(f"{MISTAKE_ARCH} in train mode", SEED_TRAIN_MODE_ACCURACY))
    return rows


def train_mode_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean, std,
                        order: torch.Tensor, batch_size: int = SEED_EVAL_BATCH) -> float:
    """The seed's mistake: accuracy with the model left in train mode, so each BatchNorm layer
    normalises a test batch by that batch's own statistics. (No gradients: the seed's loop had
    torch.no_grad; it forgot only model.eval().) `order` is the order the batches are read in.
    The model's running statistics change as a side effect; pass a copy you can spare."""
    model.train()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            logits = model(normalize(images[rows], mean, std))
            correct += int((logits.argmax(dim=1) == labels[rows]).sum())
    return correct / max(len(order), 1)


def class_sorted(labels: torch.Tensor) -> torch.Tensor:
    """The order an ImageFolder test loader without shuffling reads: class by class."""
    return torch.sort(labels, stable=True).indices


def shuffled(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))


# ---- text ---------------------------------------------------------------------------------------

# faithful: ours under the seed's conditions (no normalisation); normalised: with train-split mean/std.
COLUMNS = ("architecture", "params", "seed", "faithful", "normalised", "faithful-seed", "norm.-faithful", "time")


def cells(row: Row) -> list[str]:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    def points(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:+.1f}"

    return [row.arch, "-" if row.params is None else f"{row.params:,}", pct(row.seed), pct(row.faithful),
            pct(row.normalised), points(_minus(row.faithful, row.seed)),
            points(_minus(row.normalised, row.faithful)), f"{row.seconds:.0f} s" if row.seconds else "-"]


def markdown(rows: list[Row], heading: str) -> str:
    lines = [heading, "", "faithful: ours under the seed's conditions (ToTensor only, no normalisation); "
             "normalised: with the training split's mean/std; differences in points.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    notes = [f"- {row.arch}: {row.note}" for row in rows if row.note]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
