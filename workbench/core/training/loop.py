"""One training epoch and one evaluation pass, as flat functions a reader can follow top to bottom.

Every recipe runs through these two: what differs (optimizer, schedule, loss, weight averaging,
test-time views) arrives in TrainingParts and the views, never as another loop.
"""

from __future__ import annotations

import time
from typing import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.metrics import confusion_matrix
from workbench.core.training.batches import DeviceBatches
from workbench.core.training.control import TrainControl
from workbench.core.training.device import autocast_context
from workbench.core.training.parts import PLAIN, TrainingParts, View
from workbench.core.training.report import Meter


@dataclass
class EpochResult:
    steps_done: int  # in this epoch, counting steps done before a resume
    stopped: bool  # left early because a stop was asked for
    first_batch: tuple[torch.Tensor, torch.Tensor] | None  # (images, positions), when asked


@dataclass
class EvalResult:
    split: str  # "val" or "test"
    loss: float  # mean cross entropy (no label smoothing) of the views' combined logits
    acc: float
    plain_acc: float  # of the first view alone (equals acc without test-time augmentation)
    confusion: torch.Tensor  # (K, K) int64 on the CPU, rows = true class
    probs: torch.Tensor  # (N, K) float32 on the CPU
    losses: torch.Tensor  # (N,) per-image cross entropy on the CPU
    seconds: float
    positions: torch.Tensor  # (N,) positions in the split; fewer than the split when a streamed file failed

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)


def train_one_epoch(
    model: nn.Module,
    batches: DeviceBatches,
    order: torch.Tensor,
    parts: TrainingParts,
    control: TrainControl,
    meter: Meter,
    *,
    epoch: int,
    start_step: int = 0,
    amp_dtype: torch.dtype | None = None,
    keep_first_batch: bool = False,
) -> EpochResult:
    parts.train_mode(model)
    first_batch, stopped = None, False
    for batch in batches.batches(order, start_step, epoch):
        if keep_first_batch and first_batch is None:
            first_batch = (batch.images.detach().float().cpu(), batch.positions.cpu())
        with autocast_context(batches.device, amp_dtype):
            logits = model(batch.images)
            loss = parts.criterion(logits, batch.labels)
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scaler.scale(loss).backward()
        if parts.clip_grad_norm:  # on the true gradients: a GradScaler's are scaled until unscaled
            parts.scaler.unscale_(parts.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), parts.clip_grad_norm)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        meter.add(loss, logits, batch.labels)  # device tallies; the host reads them a few times a second
        parts.scheduler.step()
        if parts.averager is not None:
            parts.averager.after_step(meter.global_step)

        # Pause and stop act between steps, before the next batch draws augmentation
        # randomness, so a checkpoint taken now resumes at exactly this point.
        control.wait_while_paused()
        if control.stop_requested and meter.epoch_step < len(batches):
            stopped = True
            break
    return EpochResult(steps_done=meter.epoch_step, stopped=stopped, first_batch=first_batch)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: DeviceBatches,
    num_classes: int,
    *,
    views: tuple[View, ...] = PLAIN,
    amp_dtype: torch.dtype | None = None,
    split: str = "test",
    progress: Callable[[str, int, int], None] | None = None,
) -> EvalResult:
    """Metrics in eval mode without autograd, over the weighted mean of the views' logits.

    The model's mode comes back as it was. Everything stays on the device until one copy at the end.
    `progress(split, images done, images)` hears of each batch (it reads nothing from the device).
    """
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    probs, losses, labels, plain, positions = [], [], [], [], []
    done, total = 0, len(batches.labels)
    try:
        for batch in batches.batches(batches.epoch_order()):
            combined = None
            for index, view in enumerate(views):
                images = view.apply(batch.images)
                if images is not batch.images:
                    images = batches.layout(images)
                with autocast_context(batches.device, amp_dtype):
                    logits = model(images).float()
                if index == 0:  # read now: a CUDA-graph output is overwritten by the next call
                    plain.append(logits.argmax(dim=1))
                weighted = logits if view.weight == 1.0 else view.weight * logits
                combined = weighted if combined is None else combined + weighted
            losses.append(F.cross_entropy(combined, batch.labels, reduction="none"))
            probs.append(combined.softmax(dim=1))
            labels.append(batch.labels)
            positions.append(batch.positions)
            done += len(batch.labels)
            if progress is not None:
                progress(split, done, total)
    finally:
        model.train(was_training)
    all_labels = torch.cat(labels)
    all_probs = torch.cat(probs)
    preds = all_probs.argmax(dim=1)
    confusion = confusion_matrix(all_labels, preds, num_classes, check=False)
    correct = torch.stack([(preds == all_labels).sum(), (torch.cat(plain) == all_labels).sum()]).cpu()
    count = max(len(all_labels), 1)
    all_losses = torch.cat(losses).cpu()
    return EvalResult(
        split=split,
        loss=float(all_losses.double().sum()) / count,
        acc=int(correct[0]) / count,
        plain_acc=int(correct[1]) / count,
        confusion=confusion.cpu(),
        probs=all_probs.cpu(),
        losses=all_losses,
        seconds=time.perf_counter() - started,
        positions=torch.cat(positions).cpu(),
    )
