"""One training epoch and one evaluation pass, as flat functions a reader can follow.

Metrics accumulate in device tensors; the host reads them only when a sample is due
(a few times a second) and at the end of the epoch, so the GPU never waits on Python.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.control import TrainControl
from workbench.core.loader import DeviceBatches

SAMPLE_INTERVAL_S = 0.3  # at most ~3 step samples a second reach the UI


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; training cannot go on from these weights."""


@dataclass
class StepSample:
    """Metrics since the previous sample, read from the device at one sync point."""

    step: int  # steps done in this epoch
    global_step: int
    loss: float
    acc: float
    images: int
    seconds: float


@dataclass
class EpochResult:
    loss: float
    acc: float
    images: int
    seconds: float
    steps_done: int  # in this epoch, counting steps done before a resume
    stopped: bool  # left early because a stop was asked for
    first_batch: tuple[torch.Tensor, torch.Tensor] | None  # (images, positions), when asked


@dataclass
class EvalResult:
    loss: float
    acc: float
    confusion: torch.Tensor  # (K, K) int64 on the CPU, rows = true class
    probs: torch.Tensor  # (N, K) float32 on the CPU
    losses: torch.Tensor  # (N,) per-image cross entropy on the CPU
    seconds: float

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    loader: DeviceBatches,
    order: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    control: TrainControl,
    *,
    global_step: int,
    start_step: int = 0,
    amp_dtype: torch.dtype | None = None,
    on_sample: Callable[[StepSample], None] = lambda sample: None,
    keep_first_batch: bool = False,
) -> EpochResult:
    device = loader.device
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    first_bad_step = torch.full((), -1, device=device, dtype=torch.int64)
    sampled_loss, sampled_correct, sampled_images = 0.0, 0, 0
    images_seen, step, stopped = 0, start_step, False
    first_batch = None
    started = last_sample = time.perf_counter()

    for batch in loader.batches(order, start_step):
        if keep_first_batch and first_batch is None:
            first_batch = (batch.images.detach().float().cpu(), batch.positions.cpu())
        with autocast_context(device, amp_dtype):
            logits = model(batch.images)
            loss = criterion(logits, batch.labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        count = batch.labels.numel()
        loss_sum += loss.detach().float() * count
        correct += (logits.detach().argmax(dim=1) == batch.labels).sum()
        # Remember the first bad step on the device; reading it now would sync every step.
        bad = ~torch.isfinite(loss.detach()) & (first_bad_step < 0)
        first_bad_step = torch.where(bad, global_step, first_bad_step)
        images_seen += count
        step += 1
        global_step += 1

        # Pause and stop act between steps, before the next batch draws augmentation
        # randomness, so a checkpoint taken now resumes at exactly this point.
        control.wait_while_paused()
        if control.stop_requested and step < len(loader):
            stopped = True
            break

        now = time.perf_counter()
        if now - last_sample >= SAMPLE_INTERVAL_S:
            _raise_if_bad(first_bad_step, loader, optimizer)
            total_loss, total_correct = loss_sum.item(), int(correct.item())
            new_images = images_seen - sampled_images
            on_sample(
                StepSample(
                    step=step,
                    global_step=global_step,
                    loss=(total_loss - sampled_loss) / max(new_images, 1),
                    acc=(total_correct - sampled_correct) / max(new_images, 1),
                    images=new_images,
                    seconds=now - last_sample,
                )
            )
            sampled_loss, sampled_correct, sampled_images = total_loss, total_correct, images_seen
            last_sample = now

    _raise_if_bad(first_bad_step, loader, optimizer)
    seconds = time.perf_counter() - started
    return EpochResult(
        loss=loss_sum.item() / max(images_seen, 1),
        acc=int(correct.item()) / max(images_seen, 1),
        images=images_seen,
        seconds=seconds,
        steps_done=step,
        stopped=stopped,
        first_batch=first_batch,
    )


def _raise_if_bad(first_bad_step: torch.Tensor, loader: DeviceBatches, optimizer) -> None:
    bad_step = int(first_bad_step.item())
    if bad_step >= 0:
        lr = optimizer.param_groups[0]["lr"]
        raise NonFiniteLoss(
            f"the loss became NaN or infinite at step {bad_step + 1} (lr {lr:.3g}, "
            f"batch size {loader.batch_size}); lower --lr or use fp32, then start again "
            "or resume from the last good checkpoint"
        )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DeviceBatches,
    num_classes: int,
    *,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Test metrics in eval mode without autograd; restores the model's previous mode."""
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    probs, losses, labels = [], [], []
    try:
        for batch in loader.batches(loader.epoch_order()):
            with autocast_context(loader.device, amp_dtype):
                logits = model(batch.images)
            logits = logits.float()
            losses.append(F.cross_entropy(logits, batch.labels, reduction="none"))
            probs.append(logits.softmax(dim=1))
            labels.append(batch.labels)
    finally:
        model.train(was_training)
    all_probs = torch.cat(probs).cpu()
    all_losses = torch.cat(losses).cpu()
    all_labels = torch.cat(labels).cpu()
    preds = all_probs.argmax(dim=1)
    confusion = torch.bincount(
        all_labels * num_classes + preds, minlength=num_classes * num_classes
    ).view(num_classes, num_classes)
    count = max(len(all_labels), 1)
    return EvalResult(
        loss=float(all_losses.double().sum()) / count,
        acc=float((preds == all_labels).sum()) / count,
        confusion=confusion,
        probs=all_probs,
        losses=all_losses,
        seconds=time.perf_counter() - started,
    )
