"""The cifar10-speedrun recipe's parts: hyperparameters, network, optimizer, schedules, one step.

`speedrun_train` runs them (timing, events, evaluation); keeping them here lets a reader see
the whole recipe at once. The units follow airbench94's description: learning rate and weight
decay per 1024 examples, so changing the batch size keeps the same training dynamics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.models.speedrun import Speedrun
from workbench.core.steps import autocast_context

# =============================================================================================
# Hyperparameters
# =============================================================================================

HYPERPARAMETERS: dict[str, Any] = {
    # -- optimisation --
    "epochs": 10,  # passes over the training set: the preset's value (a run uses config.epochs)
    "batch_size": 1024,  # images per step
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
    "eval_batch_size": 2000,  # test images per forward pass
    # -- network --
    "widths": (64, 256, 256),  # output channels of the three conv groups
}


# =============================================================================================
# Model setup: network, optimizer, learning-rate schedule, lookahead
# =============================================================================================


def build_model(channels: int, num_classes: int, hyp: dict[str, Any], device: torch.device) -> Speedrun:
    model = Speedrun(channels, num_classes, widths=tuple(hyp["widths"])).to(device)
    if device.type != "mps":
        model = model.to(memory_format=torch.channels_last)
    return model


def build_optimizer(model: Speedrun, hyp: dict[str, Any]) -> torch.optim.SGD:
    """Nesterov SGD on the summed loss, with lr and decay converted from per-1024-example units.

    A gradient's total effect under momentum m is lr / (1 - m) times one step's, and a step
    sums `batch_size` examples, so a move of hyp["lr"] per 1024 examples needs a PyTorch lr of
    hyp["lr"] * (1 - m) / 1024 whatever the batch size. PyTorch multiplies weight decay by the
    lr; each group's decay is divided by its own lr so all groups decay alike (decoupled).
    """
    momentum = hyp["momentum"]
    lr = hyp["lr"] * (1 - momentum) / 1024
    decay_per_step = hyp["weight_decay"] * (1 - momentum) * hyp["batch_size"] / 1024  # lr * wd
    bn_biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.bias.requires_grad]
    special = {id(p) for p in bn_biases} | {id(model.whiten.bias)}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in special]
    bias_lr = lr * hyp["bias_lr_scale"]
    groups = [
        dict(params=bn_biases, lr=bias_lr, peak_lr=bias_lr, weight_decay=decay_per_step / bias_lr, name="bn_biases"),
        dict(params=[model.whiten.bias], lr=lr, peak_lr=lr, weight_decay=decay_per_step / lr, name="whiten_bias"),
        dict(params=others, lr=lr, peak_lr=lr, weight_decay=decay_per_step / lr, name="weights"),
    ]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


def lr_factor(step: int, total_steps: int, hyp: dict[str, Any]) -> float:
    """Share of the peak lr at `step` (0-based): linear up from lr_start, then down to lr_end."""
    warm = max(int(hyp["warmup"] * total_steps), 1)
    if step < warm:
        return hyp["lr_start"] + (1 - hyp["lr_start"]) * step / warm
    done = (step - warm) / max(total_steps - warm, 1)
    return 1 + (hyp["lr_end"] - 1) * min(done, 1.0)


def set_lr(optimizer: torch.optim.Optimizer, factor: float, whiten_bias_frozen: bool) -> None:
    # Python floats, not tensors: the compiled model never sees them, so nothing recompiles.
    for group in optimizer.param_groups:
        frozen = whiten_bias_frozen and group["name"] == "whiten_bias"
        group["lr"] = 0.0 if frozen else group["peak_lr"] * factor


class Lookahead:
    """Slow copies of the weights (and BatchNorm statistics) that the fast ones are pulled back to.

    Every `lookahead_every` steps: slow <- decay * slow + (1 - decay) * fast, then fast <- slow.
    The decay ramps from 0 (no effect) to lookahead_decay ** every at the end of training, so
    the last epochs average over many steps, like an EMA whose result is also trained from.
    """

    def __init__(self, model: nn.Module) -> None:
        self.live = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.live]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        torch._foreach_lerp_(self.slow, self.live, 1.0 - decay)
        torch._foreach_copy_(self.live, self.slow)


def lookahead_decay(step: int, total_steps: int, hyp: dict[str, Any]) -> float:
    progress = step / max(total_steps, 1)
    return hyp["lookahead_decay"] ** hyp["lookahead_every"] * progress ** hyp["lookahead_power"]


def train_step(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    label_smoothing: float,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """One optimizer step on the summed loss; returns [loss sum, correct] as a device tensor."""
    with autocast_context(images.device, amp_dtype):
        logits = net(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction="sum")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    correct = (logits.detach().argmax(dim=1) == labels).sum()
    return torch.stack([loss.detach().double(), correct.double()])
