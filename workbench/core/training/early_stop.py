"""Early stopping: end a run after `patience` evaluated epochs without a better held-out metric."""

from __future__ import annotations

from dataclasses import dataclass

METRICS = ("acc", "loss")  # accuracy: higher is better; loss: lower is better


@dataclass
class EarlyStopper:
    patience: int  # evaluated epochs without improvement that end the run; 0 = never
    metric: str = "acc"
    min_delta: float = 0.0  # an improvement smaller than this does not count
    best: float | None = None
    best_epoch: int | None = None
    waited: int = 0  # evaluated epochs since the best one

    def update(self, epoch: int, value: float) -> str:
        """Take an evaluated epoch's value; returns why to stop now, or "" to go on."""
        better = self.best is None or (
            value > self.best + self.min_delta if self.metric == "acc" else value < self.best - self.min_delta
        )
        if better:
            self.best, self.best_epoch, self.waited = value, epoch, 0
            return ""
        self.waited += 1
        if not self.patience or self.waited < self.patience:
            return ""
        shown = f"{self.best:.2%}" if self.metric == "acc" else f"{self.best:.4f}"
        name = "accuracy" if self.metric == "acc" else "loss"
        return (
            f"early stop after epoch {epoch}: no better {{split}} {name} for {self.patience} evaluated "
            f"epoch{'s' if self.patience != 1 else ''} (best {shown} at epoch {self.best_epoch})"
        )

    @classmethod
    def replay(cls, patience: int, metric: str, min_delta: float, rows: list[dict], split: str) -> EarlyStopper:
        """The stopper as it stood after the epochs of `rows` (a resumed run goes on counting)."""
        stopper = cls(patience, metric, min_delta)
        for row in rows:
            value = row.get(f"{split}_{metric}")
            if isinstance(value, (int, float)):
                stopper.update(row["epoch"], value)
        return stopper
