"""The standard recipe (the form's optimizer, schedule and augmentation) and choosing a recipe by name."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError
from workbench.core.models.head import split_head
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
        optimizer = self.optimizer(model, config, device)
        return TrainingParts(
            optimizer=optimizer,
            scheduler=self.schedule(optimizer, config, steps_per_epoch, batch_size, done_steps),
            scaler=torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"),
            criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
            clip_grad_norm=config.clip_grad_norm,
            train_mode=self.train_mode,
        )

    def optimizer(self, model: nn.Module, config: RunConfig, device: torch.device) -> torch.optim.Optimizer:
        return build_optimizer(model, config, device)

    def train_mode(self, model: nn.Module) -> None:
        model.train()

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


class FinetuneRecipe(StandardRecipe):
    """The standard recipe from trained weights, in two phases: for --freeze-epochs only the head
    (the network's last layer with parameters) trains; then every layer, the backbone at
    --backbone-lr-mult of the rate. The backbone's BatchNorm keeps the starting statistics
    throughout unless --batchnorm train. The phase is a function of the epoch, so a resume
    re-enters it."""

    name = "finetune"

    def __init__(self) -> None:
        self.head: list[nn.Parameter] = []
        self.backbone: list[nn.Parameter] = []
        self.backbone_norms: list[nn.Module] = []
        self.backbone_frozen = False
        self.keep_norm_stats = True

    def optimizer(self, model: nn.Module, config: RunConfig, device: torch.device) -> torch.optim.Optimizer:
        self.head, self.backbone, self.backbone_norms = split_head(model)
        return build_optimizer(model, config, device, self.backbone, config.backbone_lr_mult)

    def begin_epoch(self, model: nn.Module, epoch: int, config: RunConfig) -> str:
        self.backbone_frozen = epoch <= config.freeze_epochs
        self.keep_norm_stats = self.backbone_frozen or config.batchnorm == "frozen"
        for param in self.backbone:
            param.requires_grad_(not self.backbone_frozen)
        if self.backbone_frozen:
            epochs = "epoch 1" if config.freeze_epochs == 1 else f"epochs 1-{config.freeze_epochs}"
            return f"head only ({epochs}; the backbone is frozen)"
        norms = "frozen BatchNorm statistics" if self.keep_norm_stats else "BatchNorm statistics updated"
        return f"every layer (the backbone at {config.backbone_lr_mult:g} x the learning rate, {norms})"

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        if self.keep_norm_stats:
            for norm in self.backbone_norms:
                norm.eval()

    def summary(self, config: RunConfig, steps_per_epoch: int, batch_size: int) -> str:
        phases = (f"head only for {counted(config.freeze_epochs, 'epoch')}, then " if config.freeze_epochs else "")
        return (f"finetune recipe: {phases}every layer with the backbone at {config.backbone_lr_mult:g} x the "
                f"rate; {super().summary(config, steps_per_epoch, batch_size).removeprefix('standard recipe: ')}")


def recipe_for(config: RunConfig, recorded: dict[str, Any] | None = None) -> Recipe:
    """The recipe `config.recipe` names; `recorded` (from run.json) restores its hyperparameters."""
    if config.recipe == "standard":
        return StandardRecipe()
    if config.recipe == "finetune":
        return FinetuneRecipe()
    if config.recipe == "speedrun":
        from workbench.core.speedrun.recipe import SpeedrunRecipe

        saved = (recorded or {}).get("hyperparameters") if (recorded or {}).get("name") == "speedrun" else None
        return SpeedrunRecipe(saved)
    raise ConfigError("recipe", f"{config.recipe!r} is not a recipe")
