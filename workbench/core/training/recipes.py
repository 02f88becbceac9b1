"""The standard recipe (the form's optimizer, schedule and augmentation) and choosing a recipe by name."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError
from workbench.core.training.augment import AugmentSettings
from workbench.core.training.optim import build_optimizer, build_scheduler
from workbench.core.training.parts import Recipe, Schedule, TrainingParts
from workbench.core.wording import count as counted


class StandardRecipe(Recipe):
    """Every training setting comes from the RunConfig; held-out data is evaluated every epoch."""

    name = "standard"

    def augment_settings(self, config: RunConfig) -> AugmentSettings:
        return AugmentSettings(ops=tuple(config.augment))

    def build(self, model, config, device, steps_per_epoch, batch_size, done_steps) -> TrainingParts:
        optimizer = build_optimizer(model, config, device)
        return TrainingParts(
            optimizer=optimizer,
            scheduler=self.schedule(optimizer, config, steps_per_epoch, batch_size, done_steps),
            scaler=torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"),
            criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
            clip_grad_norm=config.clip_grad_norm,
        )

    def schedule(self, optimizer, config, steps_per_epoch, batch_size, done_steps) -> Schedule:
        return build_scheduler(optimizer, config, steps_per_epoch, done_steps=done_steps)

    def summary(self, config: RunConfig, steps_per_epoch: int, batch_size: int) -> str:
        augment = ", ".join(config.augment) or "no augmentation"
        smoothing = f", label smoothing {config.label_smoothing:g}" if config.label_smoothing else ""
        warmup = f" after {config.warmup_epochs:g} warm-up epochs" if config.warmup_epochs else ""
        smoothing += f", gradients clipped to norm {config.clip_grad_norm:g}" if config.clip_grad_norm else ""
        return (
            f"standard recipe: {counted(config.epochs, 'epoch')} x {counted(steps_per_epoch, 'step')} of {batch_size}, "
            f"{config.optimizer} lr {config.lr:g} with a {config.schedule} schedule{warmup}, "
            f"weight decay {config.weight_decay:g}{smoothing}, {augment}, {config.precision}"
        )


def recipe_for(config: RunConfig, recorded: dict[str, Any] | None = None) -> Recipe:
    """The recipe `config.recipe` names; `recorded` (from run.json) restores its hyperparameters."""
    if config.recipe == "standard":
        return StandardRecipe()
    if config.recipe == "speedrun":
        from workbench.core.speedrun.recipe import SpeedrunRecipe

        saved = (recorded or {}).get("hyperparameters") if (recorded or {}).get("name") == "speedrun" else None
        return SpeedrunRecipe(saved)
    raise ConfigError("recipe", f"{config.recipe!r} is not a recipe")
