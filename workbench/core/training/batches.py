"""Batches from uint8 tensors kept on the training device: shuffle, normalise, augment.

The whole split lives on the device as uint8 (CIFAR-10 is 150 MB), so a batch is one
gather plus a few tensor ops, with no worker processes and no host round trip. When
the split would not fit comfortably in GPU memory it stays in pinned host memory and
each batch is copied over asynchronously.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from workbench.core.data.normalize import Normalizer
from workbench.core.training.augment import Augmenter, AugmentSettings

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
        drop_last: bool = False,
    ) -> None:
        self.device = device
        self.storage_device, self.placement_note = placement(images, device)
        if self.storage_device.type == "cpu" and device.type == "cuda":
            images = images.pin_memory()
        self.images = images.to(self.storage_device)
        self.labels = labels.to(device)
        self.normalize = Normalizer(mean, std, len(mean), device)  # per-channel values from the data set
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last  # a recipe's choice (the speedrun's fixed batches); said in the note
        self.dtype = dtype
        self.channels_last = channels_last
        # Separate streams of randomness, so changing augmentation never changes the order.
        self.order_generator = torch.Generator(device=device).manual_seed(seed)
        self.augment_generator = torch.Generator(device=device).manual_seed(seed + 1)
        settings = augment_settings or AugmentSettings(ops=())
        self.augmenter = Augmenter(settings, self.augment_generator, len(labels), seed)

    def __len__(self) -> int:
        return steps_per_epoch(len(self.labels), self.batch_size, drop_last=self.drop_last)

    def step_span(self, step: int) -> tuple[int, int]:
        """Where step `step`'s batch lies in the epoch's order: every image is in one batch (the
        last takes the remainder) unless the recipe drops a ragged end on purpose."""
        start = step * self.batch_size
        if step == len(self) - 1 and not self.drop_last:
            return start, len(self.labels)
        return start, min(start + self.batch_size, len(self.labels))

    def split_note(self) -> str:
        """A sentence when a step is not `batch_size` images: a split smaller than one batch, or
        the images a dropped ragged end leaves out of every epoch; "" otherwise."""
        count, size = len(self.labels), self.batch_size
        if count < size:
            return f"the batch size {size} is more than the {count} training images: each step takes all {count}"
        left_out = images_left_out(count, size, self.drop_last)
        if left_out:
            return (f"the recipe trains on whole batches of {size}: the last {left_out} images of each shuffled "
                    "epoch (a different few each time) are left out of it")
        return ""

    def epoch_order(self) -> torch.Tensor:
        count = len(self.labels)
        if not self.shuffle:
            return torch.arange(count, device=self.device)
        return torch.randperm(count, generator=self.order_generator, device=self.device)

    def batches(self, order: torch.Tensor, start_step: int = 0, epoch: int = 1) -> Iterator[Batch]:
        """Yield epoch `epoch`'s batches from `start_step` on (a resumed epoch skips ahead)."""
        for step in range(start_step, len(self)):
            start, end = self.step_span(step)
            yield self.make_batch(order[start:end], epoch)

    def make_batch(self, positions: torch.Tensor, epoch: int = 1) -> Batch:
        if self.storage_device != self.device:
            raw = self.images[positions.cpu()].to(self.device, non_blocking=True)
        else:
            raw = self.images[positions]
        return self.finish_batch(raw, positions, epoch)

    def finish_batch(self, raw: torch.Tensor, positions: torch.Tensor, epoch: int = 1) -> Batch:
        """uint8 images on the device -> normalised, augmented, in the training dtype and layout."""
        images = self.augmenter(self.normalize(raw), positions, epoch).to(self.dtype)
        return Batch(self.layout(images), self.labels[positions], positions)

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """The memory layout the model runs fastest on (channels_last on a GPU)."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def new_unreadable(self) -> str:
        """A sentence about files that failed to decode since the last call ("" for none)."""
        return ""

    def plain(self, count: int) -> torch.Tensor:
        """The first `count` images, normalised and not augmented (for data-dependent init)."""
        positions = torch.arange(min(count, len(self.labels)), device=self.device)
        if self.storage_device != self.device:
            return self.normalize(self.images[positions.cpu()].to(self.device))
        return self.normalize(self.images[positions])

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "order": self.order_generator.get_state(),
            "augment": self.augment_generator.get_state(),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.order_generator.set_state(state["order"].cpu())
        self.augment_generator.set_state(state["augment"].cpu())


def images_left_out(count: int, batch_size: int, drop_last: bool) -> int:
    """Training images an epoch leaves out: a ragged end, only when a recipe drops it on purpose."""
    return count - steps_per_epoch(count, batch_size, drop_last) * batch_size if drop_last and count > batch_size else 0


def steps_per_epoch(count: int, batch_size: int, drop_last: bool = False) -> int:
    """Steps that take every image once: the last batch takes the remainder, and a remainder of a
    single image rides with the batch before it (BatchNorm cannot train on one image). With
    `drop_last` (a recipe's choice) a ragged end is left out, unless it is the only batch."""
    if count <= batch_size:
        return 1
    full, rest = divmod(count, batch_size)
    return full if drop_last else full + (rest > 1)


class StreamingBatches(DeviceBatches):
    """The same batches, decoded from files by DataLoader workers, for splits too big to hold.

    Order, augmentation and normalisation are DeviceBatches' own (same generators, same
    steps per epoch); only where the uint8 pixels come from differs. Unreadable files are
    dropped from their batch and counted in `unreadable`.
    """

    def __init__(self, files, labels, mean, std, device, batch_size, *, workers: int = 0, **options) -> None:
        self.files = files
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.unreadable: set[int] = set()
        self._reported: set[int] = set()
        super().__init__(torch.empty(0, dtype=torch.uint8), labels, mean, std, device, batch_size, **options)
        self.placement_note = (
            f"data streamed from {len(files):,} files by {self.workers} decoding workers"
        )

    def plain(self, count: int) -> torch.Tensor:
        return self.normalize(self.files[torch.arange(min(count, len(self.files)))].to(self.device))

    def new_unreadable(self) -> str:
        """Files can become unreadable after the first check; say so once per file."""
        found = self.unreadable - self._reported
        self._reported |= found
        if not found:
            return ""
        names = ", ".join(self.files.paths[p] for p in sorted(found)[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        return f"skipped {len(found)} unreadable images: {names}{more}"

    def batches(self, order: torch.Tensor, start_step: int = 0, epoch: int = 1) -> Iterator[Batch]:
        order = order.cpu()
        plan = [order[slice(*self.step_span(step))].tolist() for step in range(start_step, len(self))]
        loader = torch.utils.data.DataLoader(
            _Positions(self.files), batch_sampler=plan, num_workers=self.workers,
            collate_fn=_stack_readable, pin_memory=self.device.type == "cuda",
        )
        for wanted, (positions, raw) in zip(plan, loader):
            self.unreadable.update(set(wanted) - set(positions.tolist()))
            yield self.finish_batch(raw.to(self.device, non_blocking=True), positions.to(self.device), epoch)


class _Positions(torch.utils.data.Dataset):
    def __init__(self, files) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, position: int):
        return position, self.files[position]


def _stack_readable(items):
    kept = [(position, image) for position, image in items if image is not None]
    positions = torch.tensor([position for position, _ in kept], dtype=torch.int64)
    return positions, torch.stack([image for _, image in kept])


def batches_for(images, labels, mean, std, device, batch_size, **options) -> DeviceBatches:
    """Streaming batches for a split of files decoded on demand, device-resident otherwise."""
    if not isinstance(images, torch.Tensor):  # decoded tensors never need the streaming module (nor torchvision)
        from workbench.core.data.streaming import FileImages

        if isinstance(images, FileImages):
            return StreamingBatches(images, labels, mean, std, device, batch_size, **options)
    return DeviceBatches(images, labels, mean, std, device, batch_size, **options)
