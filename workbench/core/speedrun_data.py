"""The speedrun's images on the device: batches with translate and alternating flip, TTA views."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.steps import autocast_context


def full_batches(train_size: int, batch_size: int) -> int:
    """Full batches only (a ragged last one would give a compiled model a new shape)."""
    return max(train_size // batch_size, 1)

# =============================================================================================
# Data and augmentation on the device
# =============================================================================================


class _Normalizer:
    """uint8 pixels -> (x/255 - mean)/std in float32, as one multiply-add per batch.

    Not inspect.Normalizer: the speedrun wants the fused form and a channels_last result for
    its compiled network; the engine keeps the plain form that exports reproduce bit for bit.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive in every channel, got {list(std)}")
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.channels_last = device.type != "mps"

    def __call__(self, images_u8: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, images_u8.float(), self.scale)
        # channels_last: what cuDNN's fastest kernels want, and 1.7x faster on this CPU too.
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Fold indices in [-(size-1), 2(size-1)] back into [0, size) as reflect padding does."""
    return (size - 1) - ((size - 1) - index.abs()).abs()


def translate_and_flip(images: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Shift each image by (dy, dx) pixels over a reflect-padded border, then mirror it if asked.

    images: (N, C, H, W) of any dtype; shifts: int64 (N, 2), |shift| < side; flips: bool (N,).
    Result i equals F.pad(images[i], [p] * 4, mode="reflect")[:, p+dy : p+dy+H, p+dx : p+dx+W],
    flipped left-right when flips[i] -- computed as one gather, without a padded copy.
    """
    n, c, h, w = images.shape
    device = images.device
    shifts, flips = shifts.to(device), flips.to(device)
    rows = _reflect(torch.arange(h, device=device) + shifts[:, 0:1], h)  # (N, H)
    columns = torch.arange(w, device=device).expand(n, w)
    columns = torch.where(flips[:, None], (w - 1) - columns, columns)  # mirror, then shift
    columns = _reflect(columns + shifts[:, 1:2], w)  # (N, W)
    index = (rows[:, :, None] * w + columns[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)


class TrainImages:
    """The training split as uint8 on the device, with its flip plan and per-epoch shifts.

    Alternating flip: the first epoch flips a random half of the images; after that image i
    is flipped on every other epoch, so consecutive epochs flip complementary sets and every
    image is seen both ways equally often. Shifts are drawn afresh for every image each epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        hyp: dict[str, Any],
        seed: int,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.normalize = _Normalizer(mean, std, device)
        self.batch_size = int(hyp["batch_size"])
        self.translate = int(hyp["translate"])
        self.alternating = bool(hyp["alternating_flip"])
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.first_flips = self._coin_flips()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return full_batches(len(self), self.batch_size)

    @property
    def images_per_step(self) -> int:
        return min(self.batch_size, len(self))

    def _coin_flips(self) -> torch.Tensor:
        return torch.rand(len(self), generator=self.generator, device=self.generator.device) < 0.5

    def flips(self, epoch: int) -> torch.Tensor:
        """Which images are mirrored in `epoch` (0-based): bool (N,)."""
        if not self.alternating:
            return self._coin_flips()
        return self.first_flips if epoch % 2 == 0 else ~self.first_flips

    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(order, shifts, flips) for one epoch, drawn in a few kernels for all images at once."""
        device = self.generator.device
        order = torch.randperm(len(self), generator=self.generator, device=device)
        span = 2 * self.translate + 1
        shifts = torch.randint(0, span, (len(self), 2), generator=self.generator, device=device)
        return order, shifts - self.translate, self.flips(epoch)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) per step: normalised float32, shifted and flipped per the plan."""
        order, shifts, flips = self.epoch_plan(epoch)
        size = self.images_per_step
        for step in range(self.steps_per_epoch):
            positions = order[step * size : (step + 1) * size]
            raw = translate_and_flip(self.images[positions], shifts[positions], flips[positions])
            yield self.normalize(raw), self.labels[positions]

    def plain(self, count: int) -> torch.Tensor:
        """The first `count` images, normalised and unaugmented (for the whitening filters)."""
        return self.normalize(self.images[:count]).contiguous()


class TestImages:
    """The test split as uint8 on the device; normalised batch by batch."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.normalize = _Normalizer(mean, std, device)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def raw_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) in order; views are made from uint8 so all share one layout."""
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size], self.labels[start : start + batch_size]


# =============================================================================================
# Evaluation with test-time augmentation
# =============================================================================================


@dataclass
class TTAEvaluation:
    tta_acc: float  # 0..1, from the weighted mean of the views' logits
    acc: float  # 0..1, from the plain view alone
    loss: float  # mean cross entropy of the TTA logits
    confusion: torch.Tensor  # (K, K) int64 on the CPU, rows = true class, TTA predictions
    preds: torch.Tensor  # (N,) int64 on the CPU, TTA predictions
    seconds: float

    def per_class(self, classes: Sequence[str]) -> dict[str, float]:
        totals = self.confusion.sum(dim=1).clamp(min=1)
        return dict(zip(classes, (self.confusion.diag().double() / totals).tolist()))


def tta_views(level: int) -> list[tuple[float, tuple[int, int], bool]]:
    """(weight, (dy, dx) shift, mirrored) per view. Level 2 gives the plain and mirrored views
    half the weight and four 1-pixel diagonal shifts (each mirrored or not) the other half."""
    if level == 0:
        return [(1.0, (0, 0), False)]
    if level == 1:
        return [(0.5, (0, 0), False), (0.5, (0, 0), True)]
    if level == 2:
        shifted = [(0.125, shift, flip) for shift in ((-1, -1), (1, 1)) for flip in (False, True)]
        return [(0.25, (0, 0), False), (0.25, (0, 0), True), *shifted]
    raise ValueError(f"tta_level must be 0, 1 or 2, got {level}")


@torch.inference_mode()
def evaluate_tta(
    net: nn.Module,
    test: TestImages,
    *,
    level: int,
    batch_size: int,
    amp_dtype: torch.dtype | None,
) -> TTAEvaluation:
    """Test metrics in eval mode without autograd, over the views of `level`; the model's mode
    comes back as it was. Everything stays on the device until one copy at the end."""
    views = tta_views(level)
    was_training = net.training
    net.eval()
    started = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=test.images.device)
    tta_preds, plain_preds = [], []
    try:
        for raw, labels in test.raw_batches(batch_size):
            combined = None
            for index, (weight, (dy, dx), mirrored) in enumerate(views):
                view = raw if (dy, dx, mirrored) == (0, 0, False) else _view(raw, dy, dx, mirrored)
                with autocast_context(raw.device, amp_dtype):
                    logits = net(test.normalize(view)).float()
                if index == 0:  # read now: a CUDA-graph output is overwritten by the next call
                    plain_preds.append(logits.argmax(dim=1))
                combined = weight * logits if combined is None else combined + weight * logits
            loss_sum += F.cross_entropy(combined, labels, reduction="sum").double()
            tta_preds.append(combined.argmax(dim=1))
    finally:
        net.train(was_training)
    labels = test.labels
    preds = torch.cat(tta_preds)
    num_classes = int(combined.shape[1]) if combined is not None else 0
    confusion = torch.bincount(labels * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)
    totals = torch.stack([(preds == labels).sum(), (torch.cat(plain_preds) == labels).sum()]).cpu()
    count = max(len(test), 1)
    return TTAEvaluation(
        tta_acc=int(totals[0]) / count,
        acc=int(totals[1]) / count,
        loss=float(loss_sum.cpu()) / count,
        confusion=confusion.cpu(),
        preds=preds.cpu(),
        seconds=time.perf_counter() - started,
    )


def _view(raw: torch.Tensor, dy: int, dx: int, mirrored: bool) -> torch.Tensor:
    # Constants made by fill kernels on the device: torch.tensor(..., device="cuda") would be a
    # copy from pageable host memory, which makes the host wait for the queue.
    count, device = raw.shape[0], raw.device
    shifts = torch.full((count, 2), dy, dtype=torch.int64, device=device)
    shifts[:, 1] = dx
    return translate_and_flip(raw, shifts, torch.full((count,), mirrored, dtype=torch.bool, device=device))
