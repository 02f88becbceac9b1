"""The learning-rate range test (fastai's lr_find, Lightning's Tuner.lr_find), through the one loop.

Training runs on a throwaway copy of the model with its own optimizer from the recipe, the
learning rate growing exponentially from `start_lr` to `end_lr` over `steps` steps (every
parameter group keeps its ratio to the main one). The run's model, optimizer, batch
generators and the global random state are left exactly as they were. The loss is smoothed
(an exponential moving average with bias correction); the test stops when the smoothed loss
passes `diverge` times its minimum, or is no longer finite. The suggestion says which rule
chose it, because a bare number is hard to trust.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.training.batches import DeviceBatches
from workbench.core.training.control import TrainControl
from workbench.core.training.loop import train_one_epoch
from workbench.core.training.parts import Recipe

START_LR, END_LR, STEPS = 1e-7, 10.0, 100
SMOOTHING, DIVERGE = 0.98, 4.0
SKIP_START = 0.1  # the first tenth of the curve is too noisy to pick a slope from
LOWEST_LR, HIGHEST_LR, MOST_STEPS = 1e-12, 1e10, 100_000  # beyond these no range test tells anything


def check_range(start_lr: float, end_lr: float, steps: int, smoothing: float, diverge: float) -> None:
    """Refuse, in one sentence naming the flag, a range test that cannot run or mean anything."""
    for flag, value in (("--start-lr", start_lr), ("--end-lr", end_lr)):
        if not LOWEST_LR <= value <= HIGHEST_LR:  # NaN and infinity fail this too
            raise WorkbenchError(f"{flag}: {value:g} is outside {LOWEST_LR:g} to {HIGHEST_LR:g}")
    if not start_lr < end_lr:
        raise WorkbenchError(f"--start-lr {start_lr:g} must be below --end-lr {end_lr:g}")
    if not 5 <= steps <= MOST_STEPS:
        raise WorkbenchError(f"--steps: {steps} is outside 5 to {MOST_STEPS:,}; a curve needs at least 5")
    if not 0 <= smoothing < 1:
        raise WorkbenchError(f"--smoothing: {smoothing:g} must be in [0, 1)")
    if not 1 < diverge <= 1e6:
        raise WorkbenchError(f"--diverge: {diverge:g} must be above 1 (and at most 1e6)")


@dataclass
class LrCurve:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    ended: str = ""  # why the test stopped
    suggestion: float | None = None
    rule: str = ""  # the rule that chose the suggestion, in words
    steepest: float | None = None  # lr of the steepest descent of the smoothed loss
    minimum_over_10: float | None = None  # lr of the smoothed loss's minimum, divided by 10
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


MINIMUM_RULE = "the lr of the lowest smoothed loss / 10"


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float | None, str, float | None, float | None]:
    """(suggestion, its rule, steepest-descent lr, minimum-lr / 10) for a smoothed curve.

    The suggestion is the lr of the smoothed loss's minimum divided by 10. The moving average
    lags the raw loss by about 1 / (1 - smoothing) steps, so its minimum sits where the raw loss
    is already turning up; a decade below is still on the descent. (Measured on CIFAR-10,
    basic_cnn, AdamW, batch 128: the steepest descent, 0.018, was at the edge of divergence and
    3 epochs there ended at 10% test accuracy; the minimum / 10, 0.0022, trained to 55.8%.)
    The steepest descent (the most negative slope against log10(lr), between the first tenth of
    the curve and the minimum) is reported as the bolder choice.
    """
    if len(lrs) < 3:
        return None, "too few steps to suggest anything", None, None
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    minimum_over_10 = lrs[lowest] / 10
    start = max(1, int(SKIP_START * len(lrs)))
    steepest = None
    if lowest - start >= 2:
        logs = [math.log10(lr) for lr in lrs]
        slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(start, lowest)]
        steepest = lrs[start + min(range(len(slopes)), key=slopes.__getitem__)]
    if lowest < start:
        return minimum_over_10, f"{MINIMUM_RULE} (the loss never fell: the range may start too high)", steepest, minimum_over_10
    return minimum_over_10, MINIMUM_RULE, steepest, minimum_over_10


class _Recorder(TrainControl):
    """Counts steps for train_one_epoch (the Meter's part) and decides when the test ends (the control's)."""

    def __init__(self, parts, steps: int, smoothing: float, diverge: float, outer: TrainControl,
                 on_step: Callable[[int, float, float, float], None] | None) -> None:
        super().__init__()
        self.parts, self.steps, self.smoothing, self.diverge = parts, steps, smoothing, diverge
        self.outer, self.on_step = outer, on_step
        self.curve = LrCurve()
        self.average = 0.0
        self.global_step = self.epoch_step = 0
        self.ended = ""

    def start_epoch(self) -> None:
        self.epoch_step = 0

    def add(self, loss: torch.Tensor, logits, labels) -> None:
        value = float(loss.detach())  # one sync per step: fine for a hundred steps
        lr = self.parts.lr
        self.global_step += 1
        self.epoch_step += 1
        if not math.isfinite(value):
            self.ended = f"diverged at lr {lr:.3g}: the loss is not finite"
            return
        self.average = self.smoothing * self.average + (1 - self.smoothing) * value
        smoothed = self.average / (1 - self.smoothing**self.global_step)
        curve = self.curve
        curve.lrs.append(lr)
        curve.losses.append(value)
        curve.smoothed.append(smoothed)
        if self.on_step is not None:
            self.on_step(self.global_step, lr, value, smoothed)
        if self.global_step > 5 and smoothed > self.diverge * min(curve.smoothed):
            self.ended = f"diverged at lr {lr:.3g}: the smoothed loss passed {self.diverge:g}x its minimum"
        elif self.global_step >= self.steps:
            self.ended = f"reached the end of the range after {self.steps} steps"

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        self.outer.wait_while_paused(poll_s)

    @property
    def stop_requested(self) -> bool:
        if self.outer.stop_requested and not self.ended:
            self.ended = "stopped"
        return bool(self.ended)


def lr_find(
    config: RunConfig,
    model: nn.Module,
    train: DeviceBatches,
    recipe: Recipe,
    device: torch.device,
    *,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    steps: int = STEPS,
    smoothing: float = SMOOTHING,
    diverge: float = DIVERGE,
    amp_dtype: torch.dtype | None = None,
    control: TrainControl | None = None,
    on_step: Callable[[int, float, float, float], None] | None = None,
) -> LrCurve:
    """Run the range test on a copy of `model` with the batches of `train`; see the module docstring."""
    check_range(start_lr, end_lr, steps, smoothing, diverge)
    work = copy.deepcopy(model)
    parts = recipe.build(work, config, device, len(train), train.batch_size, 0)
    base = float(parts.optimizer.param_groups[0].get("initial_lr", parts.lr))

    def factor(step: int) -> float:
        return start_lr / base * (end_lr / start_lr) ** (min(step, steps - 1) / max(steps - 1, 1))

    parts.scheduler = torch.optim.lr_scheduler.LambdaLR(parts.optimizer, factor)
    parts.averager = None  # lookahead would pull the weights back: the test measures the lr alone
    recorder = _Recorder(parts, steps, smoothing, diverge, control or TrainControl(), on_step)
    loader_state = train.state()
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            epoch = 1
            while not recorder.stop_requested:
                recorder.start_epoch()
                train_one_epoch(work, train, train.epoch_order(), parts, recorder, recorder, epoch=epoch,
                                amp_dtype=amp_dtype)
                epoch += 1
    finally:
        train.load_state(loader_state)
    curve = recorder.curve
    curve.ended = recorder.ended
    curve.suggestion, curve.rule, curve.steepest, curve.minimum_over_10 = suggest(curve.lrs, curve.smoothed)
    curve.settings = {"start_lr": start_lr, "end_lr": end_lr, "steps": steps, "smoothing": smoothing,
                      "diverge": diverge, "batch_size": train.batch_size, "recipe": recipe.name, "arch": config.arch}
    return curve
