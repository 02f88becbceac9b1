"""Early stopping (end a run after `patience` evaluated epochs without a better held-out metric),
and the judge that also asks a search's pruner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from workbench.core.errors import ConfigError

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


class Pruner(Protocol):
    """A search's trial (core/experiments/search/pruning.py): told each evaluated epoch, it may stop the run."""

    record: dict[str, Any]  # what run.json keeps of the trial

    def replay(self, rows: list[dict]) -> None: ...

    def judge(self, epoch: int, val_acc: float) -> str: ...


@dataclass
class EpochJudge:
    """Whether a run ends after an evaluated epoch: early stopping (the run is finished) or a
    search's pruner (the run is pruned, its checkpoint kept as a stopped run's)."""

    stopper: EarlyStopper
    split: str  # the held-out split judged: val, or test when there is none
    pruner: Pruner | None = None
    pruned: bool = False

    @classmethod
    def for_run(cls, config, split: str, history: list[dict], pruner: Pruner | None, is_main: bool) -> EpochJudge:
        if pruner is not None and split != "val":
            raise ConfigError("val_fraction", "a search's trial is judged on validation accuracy; "
                                              "give it a validation split (--val-fraction above 0)")
        if pruner is not None and is_main:
            pruner.replay(history)  # a resumed trial's earlier epochs
        stopper = EarlyStopper.replay(config.early_stop, config.early_stop_on, config.early_stop_delta, history, split)
        return cls(stopper, split, pruner)

    def verdict(self, epoch: int, evaluations: dict, metric: str, on_main: Callable[[Callable[[], str]], str]) -> str:
        """Why the run ends after this epoch ("" to go on); `on_main` asks the pruner on rank 0 only
        and hands every rank its answer, so all ranks stop at the same step."""
        result = evaluations.get(self.split)
        if result is None:
            return ""
        value = result.acc if metric == "acc" else result.loss
        reason = self.stopper.update(epoch, value) if self.stopper.patience else ""
        if reason:
            return reason.format(split="validation" if self.split == "val" else "test")
        if self.pruner is not None:
            pruner = self.pruner
            reason = on_main(lambda: pruner.judge(epoch, result.acc))
            self.pruned = bool(reason)
        return reason
