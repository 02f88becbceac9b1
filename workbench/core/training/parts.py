"""What a recipe hands the one engine: the optimizer and its schedule, the loss, evaluation views.

A recipe is the part of training that differs between ways of training (the standard one and
the speedrun); the loop, events, checkpoints and reports are the engine's and never differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
import torch.nn as nn

from workbench.core.catalog import RECIPES
from workbench.core.config import RunConfig
from workbench.core.training.augment import AugmentSettings, translate

Schedule = torch.optim.lr_scheduler.LRScheduler


@dataclass(frozen=True)
class View:
    """One test-time view of a batch: shifted (dy, dx) pixels over a reflect border, maybe
    mirrored, weighted in the mean of the views' logits."""

    weight: float = 1.0
    shift: tuple[int, int] = (0, 0)
    mirrored: bool = False

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        if self.shift == (0, 0) and not self.mirrored:
            return images
        # Constants made by fill kernels on the device: torch.tensor(..., device="cuda") would
        # copy from pageable host memory, which makes the host wait for the queue.
        count, device = images.shape[0], images.device
        shifts = torch.full((count, 2), self.shift[0], dtype=torch.int64, device=device)
        shifts[:, 1] = self.shift[1]
        flips = torch.full((count,), self.mirrored, dtype=torch.bool, device=device)
        return translate(images, shifts, flips)


PLAIN = (View(),)


class Averager(Protocol):
    """Weights averaged over steps (lookahead, EMA): stepped by the loop, saved with checkpoints."""

    def after_step(self, global_step: int) -> None: ...
    def finish(self, global_step: int) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainingParts:
    """The stateful objects one step uses; built by a recipe for a model, restored on resume."""

    optimizer: torch.optim.Optimizer
    scheduler: Schedule
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    averager: Averager | None = None
    clip_grad_norm: float = 0.0  # largest norm of all gradients together; 0 = no clipping
    train_mode: Callable[[nn.Module], Any] = nn.Module.train  # fine-tuning keeps frozen BatchNorm in eval

    @property
    def lr(self) -> float:
        """The optimizer's real learning rate now, of its first (main) parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])


class Recipe:
    """The parts of training that differ between recipes; the defaults are the standard ones."""

    name = ""
    save_every_epoch = True  # checkpoints after every epoch (else only when the run ends)
    data_parallel = True  # trains under torchrun, each process a shard
    drop_last = False  # every training image in every epoch; True: whole batches only (said once, recorded)
    init_samples = 5000  # training images a data-dependent init (whitening) looks at

    @property
    def description(self) -> str:
        return RECIPES[self.name]

    def check(self, config: RunConfig) -> None:
        """Raise ConfigError for a setting this recipe cannot train with."""

    def begin_epoch(self, model: nn.Module, epoch: int, config: RunConfig) -> str:
        """Set the model up for `epoch` (which layers train); returns the phase in words, "" for none."""
        return ""

    def model_options(self, config: RunConfig) -> dict[str, Any]:
        """Keyword options for the architecture's factory (recorded, so export rebuilds it)."""
        return {}

    def augment_settings(self, config: RunConfig) -> AugmentSettings:
        raise NotImplementedError

    def eval_batch_size(self, config: RunConfig, batch_size: int) -> int:
        return max(batch_size, 256)

    def evaluate_epoch(self, epoch: int, epochs: int) -> bool:
        """Whether held-out data is evaluated after `epoch` (the last epoch always is)."""
        return True

    def views(self) -> tuple[View, ...]:
        return PLAIN

    def build(
        self, model: nn.Module, config: RunConfig, device: torch.device,
        steps_per_epoch: int, batch_size: int, done_steps: int,
    ) -> TrainingParts:
        raise NotImplementedError

    def schedule(
        self, optimizer: torch.optim.Optimizer, config: RunConfig,
        steps_per_epoch: int, batch_size: int, done_steps: int,
    ) -> Schedule:
        """The per-step schedule positioned after `done_steps` (rebuilt after a batch change)."""
        raise NotImplementedError

    def summary(self, config: RunConfig, steps_per_epoch: int, batch_size: int) -> str:
        """One line for the log saying how this run trains."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """What run.json keeps so a resume rebuilds the same recipe."""
        return {"name": self.name}
