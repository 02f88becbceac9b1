"""The speedrun recipe: airbench94-style training of the `speedrun` network, as parts for the one engine.

Target: >= 94.0% CIFAR-10 test accuracy (mean of 5 seeds) in <= 3 s on one H100, timing the
training loop and the final test-time-augmented evaluation; moving the data to the GPU and
the compile warm-up are timed apart. Measured: NOT YET ON A GPU (benchmarks/speedrun_gpu.py
measures it). On 2 CPU cores the recipe is checked to learn only (tests/test_speedrun.py).

Techniques (all from airbench94's public description, every line written here): the uint8
data lives on the device and is augmented there; a frozen 2x2 patch-whitening first layer
(the network's data-dependent init, which the engine runs for any recipe); identity-initialised
convs; label smoothing; BatchNorm biases at 64x the learning rate; lookahead on the weights;
alternating flips; 2-pixel reflect translations; 6-view test-time augmentation; bf16/fp16
autocast, channels_last and torch.compile on a GPU; Nesterov SGD with a linear warm-up and
decay, the learning rate counted per 1024 examples so a batch size change keeps the dynamics.

What the engine does for every recipe is not here: batches, the step, events, checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError
from workbench.core.training.augment import AugmentSettings
from workbench.core.training.parts import Recipe, Schedule, TrainingParts, View
from workbench.core.wording import count as counted

# =============================================================================================
# Hyperparameters (epochs, batch size, precision, compile and seed come from the RunConfig)
# =============================================================================================

HYPERPARAMETERS: dict[str, Any] = {
    # -- optimisation --
    "lr": 10.0,  # per 1024 examples: total move per unit of mean gradient, momentum's gain included
    "momentum": 0.85,  # Nesterov momentum
    "weight_decay": 0.0133,  # share of each weight removed per 1024 examples at peak lr
    "bias_lr_scale": 64.0,  # BatchNorm biases: this many times the lr (their decay stays the same)
    "warmup": 0.23,  # share of all steps spent in the linear warm-up
    "lr_start": 0.2,  # lr at the first step, as a share of the peak
    "lr_end": 0.0,  # lr at the last step, as a share of the peak
    "label_smoothing": 0.2,  # probability mass spread evenly over all classes
    "whiten_bias_epochs": 3,  # epochs the whitening layer's bias trains before its lr drops to 0
    "whiten_samples": 5000,  # training images whose 2x2 patches set the whitening filters
    "lookahead_every": 5,  # steps between pulls of the fast weights towards the slow ones
    "lookahead_decay": 0.95,  # per step, compounded over lookahead_every; reached at the last step
    "lookahead_power": 3,  # the decay ramps up as (share of steps done) ** power
    # -- augmentation --
    "translate": 2,  # pixels: random shift in each direction, reflect-padded
    "alternating_flip": True,  # first epoch random flips, then each image flips every other epoch
    # -- evaluation --
    "tta_level": 2,  # 0: one view; 1: + mirror; 2: + mirror and 1-pixel translations (6 views)
    "eval_batch_size": 2000,  # held-out images per forward pass
    "evaluate_every_epoch": False,  # the timed run evaluates once, after the last epoch
    # -- network --
    "widths": (64, 256, 256),  # output channels of the three conv groups
}


class SpeedrunRecipe(Recipe):
    name = "speedrun"
    data_parallel = False  # its whitening, lookahead and per-1024 rate assume one process
    drop_last = True  # airbench's fixed batches: a ragged end of each shuffled epoch is left out
    save_every_epoch = False  # a run is seconds long: the checkpoint is written when it ends

    def __init__(self, hyperparameters: dict[str, Any] | None = None) -> None:
        unknown = sorted(set(hyperparameters or {}) - set(HYPERPARAMETERS))
        if unknown:
            raise ValueError(f"unknown speedrun hyperparameter {unknown[0]!r}")
        self.hyp = {**HYPERPARAMETERS, **(hyperparameters or {})}
        self.hyp["widths"] = tuple(self.hyp["widths"])
        self.init_samples = int(self.hyp["whiten_samples"])

    def check(self, config: RunConfig) -> None:
        if config.arch != "speedrun":
            raise ConfigError(
                "arch",
                f"the speedrun recipe is tuned for the speedrun network, not {config.arch}; "
                "choose arch speedrun, or the standard recipe",
            )

    def model_options(self, config: RunConfig) -> dict[str, Any]:
        return {"widths": list(self.hyp["widths"])}

    def augment_settings(self, config: RunConfig) -> AugmentSettings:
        flip = "alternating" if self.hyp["alternating_flip"] else "random"
        return AugmentSettings(ops=("crop", "flip"), crop_padding=int(self.hyp["translate"]), flip=flip)

    def eval_batch_size(self, config: RunConfig, batch_size: int) -> int:
        return int(self.hyp["eval_batch_size"])

    def evaluate_epoch(self, epoch: int, epochs: int) -> bool:
        return bool(self.hyp["evaluate_every_epoch"]) or epoch == epochs

    def views(self) -> tuple[View, ...]:
        return tta_views(int(self.hyp["tta_level"]))

    # ---- optimizer, schedule, lookahead ----------------------------------------------------

    def build(self, model, config, device, steps_per_epoch, batch_size, done_steps) -> TrainingParts:
        optimizer = build_optimizer(model, self.hyp, batch_size, device)
        return TrainingParts(
            optimizer=optimizer,
            scheduler=self.schedule(optimizer, config, steps_per_epoch, batch_size, done_steps),
            scaler=torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"),
            criterion=nn.CrossEntropyLoss(label_smoothing=float(self.hyp["label_smoothing"])),
            averager=Lookahead(model, self.hyp, total_steps=config.epochs * steps_per_epoch),
        )

    def schedule(self, optimizer, config, steps_per_epoch, batch_size, done_steps) -> Schedule:
        """Linear warm-up from lr_start, then linear decay to lr_end; the whitening bias stops
        training after whiten_bias_epochs. A function of the step, so a resume recomputes it."""
        hyp, total = self.hyp, config.epochs * steps_per_epoch
        frozen_from = int(hyp["whiten_bias_epochs"]) * steps_per_epoch

        def factor(step: int) -> float:
            return lr_factor(step, total, hyp)

        def whiten_factor(step: int) -> float:
            return 0.0 if step >= frozen_from else factor(step)

        for group in optimizer.param_groups:
            group["initial_lr"] = group["peak_lr"]
        lambdas = [whiten_factor if group["name"] == "whiten_bias" else factor for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas, last_epoch=done_steps - 1)

    def summary(self, config: RunConfig, steps_per_epoch: int, batch_size: int) -> str:
        hyp = self.hyp
        return (
            f"speedrun recipe: {counted(config.epochs, 'epoch')} x {counted(steps_per_epoch, 'step')} of {batch_size}, "
            f"Nesterov lr {hyp['lr']:g} per 1024 examples (momentum {hyp['momentum']:g}), BN biases "
            f"x{hyp['bias_lr_scale']:g}, label smoothing {hyp['label_smoothing']:g}, lookahead, "
            f"translate {hyp['translate']} px + {'alternating' if hyp['alternating_flip'] else 'random'} "
            f"flip, TTA level {hyp['tta_level']}, {config.precision}; it sets its own optimizer, rate, "
            "schedule and augmentation"
        )

    def record(self) -> dict[str, Any]:
        hyperparameters = {key: list(v) if isinstance(v, tuple) else v for key, v in self.hyp.items()}
        return {"name": self.name, "hyperparameters": hyperparameters}


def build_optimizer(model: nn.Module, hyp: dict[str, Any], batch_size: int, device: torch.device) -> torch.optim.SGD:
    """Nesterov SGD on the mean loss, with lr and decay converted from per-1024-example units.

    A gradient's total effect under momentum m is lr / (1 - m) times one step's, and a summed
    loss over a batch moves hyp["lr"] per 1024 examples with a PyTorch lr of
    hyp["lr"] * (1 - m) / 1024; the mean loss divides the gradient by the batch size, so its lr
    is that times batch_size. PyTorch multiplies weight decay by the lr; each group's decay is
    divided by its own lr, so all groups shrink alike (decoupled). The main group comes first:
    its lr is the one the run reports.
    """
    momentum = hyp["momentum"]
    lr = hyp["lr"] * (1 - momentum) / 1024 * batch_size
    decay_per_step = hyp["weight_decay"] * (1 - momentum) * batch_size / 1024  # lr * wd
    bn_biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.bias is not None and m.bias.requires_grad]
    whiten = getattr(model, "whiten", None)
    whiten_bias = [whiten.bias] if whiten is not None and whiten.bias is not None else []
    special = {id(p) for p in bn_biases + whiten_bias}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in special]
    bias_lr = lr * hyp["bias_lr_scale"]
    groups = [
        dict(params=others, lr=lr, peak_lr=lr, weight_decay=decay_per_step / lr, name="weights"),
        dict(params=bn_biases, lr=bias_lr, peak_lr=bias_lr, weight_decay=decay_per_step / bias_lr, name="bn_biases"),
    ]
    if whiten_bias:
        groups.append(dict(params=whiten_bias, lr=lr, peak_lr=lr, weight_decay=decay_per_step / lr, name="whiten_bias"))
    extra = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, **extra)


def lr_factor(step: int, total_steps: int, hyp: dict[str, Any]) -> float:
    """Share of the peak lr at `step` (0-based): linear up from lr_start, then down to lr_end."""
    warm = max(int(hyp["warmup"] * total_steps), 1)
    if step < warm:
        return hyp["lr_start"] + (1 - hyp["lr_start"]) * step / warm
    done = (step - warm) / max(total_steps - warm, 1)
    return 1 + (hyp["lr_end"] - 1) * min(done, 1.0)


class Lookahead:
    """Slow copies of the weights (and BatchNorm statistics) that the fast ones are pulled back to.

    Every `lookahead_every` steps: slow <- decay * slow + (1 - decay) * fast, then fast <- slow.
    The decay ramps from 0 (no effect) to lookahead_decay ** every at the end of training, so
    the last epochs average over many steps, like an EMA whose result is also trained from.
    """

    def __init__(self, model: nn.Module, hyp: dict[str, Any], total_steps: int) -> None:
        self.every = int(hyp["lookahead_every"])
        self.base = float(hyp["lookahead_decay"]) ** self.every
        self.power = float(hyp["lookahead_power"])
        self.total_steps = max(total_steps, 1)
        self.live = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.live]

    def decay(self, global_step: int) -> float:
        return self.base * (global_step / self.total_steps) ** self.power

    @torch.no_grad()
    def update(self, decay: float) -> None:
        torch._foreach_lerp_(self.slow, self.live, 1.0 - decay)
        torch._foreach_copy_(self.live, self.slow)

    def after_step(self, global_step: int) -> None:
        if global_step % self.every == 0:
            self.update(self.decay(global_step))

    def finish(self, global_step: int) -> None:
        """End on the slow weights, with the last steps folded in."""
        self.update(self.decay(global_step))

    def state_dict(self) -> dict[str, Any]:
        return {"slow": [t.clone() for t in self.slow]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["slow"]
        if len(saved) != len(self.slow):
            raise ValueError(f"lookahead state has {len(saved)} tensors, the model {len(self.slow)}")
        torch._foreach_copy_(self.slow, [t.to(s.device) for t, s in zip(saved, self.slow)])


def tta_views(level: int) -> tuple[View, ...]:
    """Level 0: one plain view. 1: plain and mirrored, half the weight each. 2: plain and mirrored
    a quarter each, and four 1-pixel diagonal shifts (each mirrored or not) an eighth each."""
    if level == 0:
        return (View(),)
    if level == 1:
        return (View(0.5), View(0.5, mirrored=True))
    if level == 2:
        shifted = tuple(View(0.125, shift, flip) for shift in ((-1, -1), (1, 1)) for flip in (False, True))
        return (View(0.25), View(0.25, mirrored=True), *shifted)
    raise ValueError(f"tta_level must be 0, 1 or 2, got {level}")
