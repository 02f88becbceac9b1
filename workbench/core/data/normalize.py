"""The one normalisation, its statistics and its exact inverse: (pixel / 255 - mean) / std per channel.

Training, evaluation, exports, predict and the image grids all use these functions, so a
model always sees pixels scaled one way and a grid shows exactly the bytes it was given.
"""

from __future__ import annotations

from typing import Sequence

import torch

_STATS_CHUNK = 4096  # images converted to float64 at a time when computing mean/std


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in [0, 1] units."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _STATS_CHUNK):
        chunk = images[start : start + _STATS_CHUNK].to(torch.float64) / 255
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = max(images.shape[0] * images.shape[2] * images.shape[3], 1)
    mean = total / count
    # A constant channel (a folder of flat colours) would divide by zero; one grey level is the floor.
    std = (total_sq / count - mean.square()).clamp(min=0).sqrt().clamp(min=1 / 255)
    return tuple(mean.tolist()), tuple(std.tolist())


def per_channel(values: Sequence[float] | torch.Tensor, channels: int, device) -> torch.Tensor:
    """Mean or std as a float32 (C, 1, 1) tensor that broadcasts over (..., C, H, W)."""
    vector = torch.as_tensor(values, dtype=torch.float32, device=device).flatten()
    if vector.numel() == 1:
        vector = vector.expand(channels)
    if vector.numel() != channels:
        raise ValueError(f"mean/std has {vector.numel()} values but the images have {channels} channels")
    return vector.reshape(channels, 1, 1)


class Normalizer:
    """uint8 -> float: (x / 255 - mean) / std per channel, computed in float32.

    The mean/std tensors are made and checked once, on the training device: building them
    from Python floats for every batch would copy to the GPU, and the std check would wait
    for it, twice per step.
    """

    def __init__(self, mean, std, channels: int, device: torch.device | str) -> None:
        self.mean = per_channel(mean, channels, device)
        self.std = per_channel(std, channels, device)
        if bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive in every channel, got {self.std.flatten().tolist()}")

    def __call__(self, images_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Only then cast to `dtype`, so half precision loses no more than its own rounding."""
        if images_uint8.dtype != torch.uint8:
            raise TypeError(f"normalize expects uint8 images, got {images_uint8.dtype}")
        pixels = images_uint8.float().div_(255.0)
        return pixels.sub_(self.mean).div_(self.std).to(dtype)


def normalize(images_uint8: torch.Tensor, mean, std, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalizer for a single use, on the images' device (inspection, export checks, predict)."""
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images_uint8.dtype}")
    return Normalizer(mean, std, images_uint8.shape[-3], images_uint8.device)(images_uint8, dtype)


def to_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The exact inverse: normalised float (N,C,H,W) -> uint8: x*std+mean, clamp to [0,1], *255, round.

    Same mean/std for every image: never per-image or per-grid rescaling.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images shaped (N, C, H, W), got {tuple(images.shape)}")
    pixels = images.detach().float()
    channels = pixels.shape[1]
    pixels = pixels * per_channel(std, channels, pixels.device) + per_channel(mean, channels, pixels.device)
    return pixels.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
