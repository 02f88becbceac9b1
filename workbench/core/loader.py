"""Batches from uint8 tensors kept on the training device: shuffle, normalise, augment.

The whole split lives on the device as uint8 (CIFAR-10 is 150 MB), so a batch is one
gather plus a few tensor ops, with no worker processes and no host round trip. When
the split would not fit comfortably in GPU memory it stays in pinned host memory and
each batch is copied over asynchronously.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from workbench.core.augment import AugmentSettings, augment
from workbench.core.inspect import normalize

GPU_SHARE = 0.4  # keep a split on the GPU when it needs at most this share of free memory


@dataclass
class Batch:
    images: torch.Tensor  # normalised (and augmented) float, on the device
    labels: torch.Tensor  # int64 on the device
    positions: torch.Tensor  # positions in the split, on the device (for image sidecars)


def placement(images: torch.Tensor, device: torch.device) -> tuple[torch.device, str]:
    """Where a uint8 split should live, and a sentence saying why."""
    size_mb = images.numel() / 2**20
    if device.type != "cuda":
        return device, f"data in memory ({size_mb:.0f} MB)"
    free, _total = torch.cuda.mem_get_info(device)
    if images.numel() <= GPU_SHARE * free:
        return device, f"data on the GPU ({size_mb:.0f} MB of {free / 2**20:.0f} MB free)"
    return torch.device("cpu"), (
        f"data streamed from pinned host memory ({size_mb:.0f} MB is over "
        f"{GPU_SHARE:.0%} of the GPU's {free / 2**20:.0f} MB free)"
    )


class DeviceBatches:
    """Iterates over one split in batches; reproducible from its generator states."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        batch_size: int,
        *,
        shuffle: bool,
        augment_settings: AugmentSettings | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        self.device = device
        self.storage_device, self.placement_note = placement(images, device)
        if self.storage_device.type == "cpu" and device.type == "cuda":
            images = images.pin_memory()
        self.images = images.to(self.storage_device)
        self.labels = labels.to(device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment_settings = augment_settings
        self.dtype = dtype
        self.channels_last = channels_last
        # Separate streams of randomness, so changing augmentation never changes the order.
        self.order_generator = torch.Generator(device=device).manual_seed(seed)
        self.augment_generator = torch.Generator(device=device).manual_seed(seed + 1)

    def __len__(self) -> int:
        return steps_per_epoch(len(self.labels), self.batch_size, drop_last=self.shuffle)

    def epoch_order(self) -> torch.Tensor:
        count = len(self.labels)
        if not self.shuffle:
            return torch.arange(count, device=self.device)
        return torch.randperm(count, generator=self.order_generator, device=self.device)

    def batches(self, order: torch.Tensor, start_step: int = 0) -> Iterator[Batch]:
        """Yield the epoch's batches from `start_step` on (a resumed epoch skips ahead)."""
        for step in range(start_step, len(self)):
            positions = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield self.make_batch(positions)

    def make_batch(self, positions: torch.Tensor) -> Batch:
        if self.storage_device != self.device:
            raw = self.images[positions.cpu()].to(self.device, non_blocking=True)
        else:
            raw = self.images[positions]
        images = normalize(raw, self.mean, self.std, dtype=torch.float32)
        if self.augment_settings is not None and self.augment_settings.ops:
            images = augment(images, self.augment_settings, self.augment_generator)
        images = images.to(self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return Batch(images, self.labels[positions], positions)

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "order": self.order_generator.get_state(),
            "augment": self.augment_generator.get_state(),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.order_generator.set_state(state["order"].cpu())
        self.augment_generator.set_state(state["augment"].cpu())


def steps_per_epoch(count: int, batch_size: int, drop_last: bool) -> int:
    """Training drops a ragged last batch (steady BatchNorm statistics) unless it is the only one."""
    if drop_last and count >= batch_size:
        return count // batch_size
    return max(1, -(-count // batch_size))
