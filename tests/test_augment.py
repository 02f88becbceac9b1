"""Tests for batched augmentation: exact crops, flips and cutouts; rotations that never read outside."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.core.training import augment as aug
from workbench.core.training.augment import (
    AUGMENTATIONS,
    AugmentSettings,
    augment,
    crop_at,
    cutout_at,
    random_crop,
    random_cutout,
    random_flip,
    random_rotate,
    rotation_grid,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def distinct_images(n: int, c: int, size: int, device: str = "cpu") -> torch.Tensor:
    """A float batch in which every pixel value is different (and none is 0)."""
    return torch.arange(1, n * c * size * size + 1, dtype=torch.float32, device=device).view(n, c, size, size)


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def all_windows(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Every crop window of the reflect-padded batch: (K, N, C, H, W), K = (2p + 1) ** 2."""
    _, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    span = range(2 * padding + 1)
    return torch.stack([padded[:, :, dy : dy + h, dx : dx + w] for dy in span for dx in span])


# --- settings --------------------------------------------------------------------------


def test_names_match_config():
    from workbench.core.config import AUGMENTATIONS as CONFIG_AUGMENTATIONS

    assert set(AUGMENTATIONS) == set(CONFIG_AUGMENTATIONS)


def test_unknown_op_is_rejected():
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        AugmentSettings(ops=("crop", "mixup"))


@pytest.mark.parametrize("ops", [(), ("none",)])
def test_no_ops_returns_input_unchanged(ops):
    images = torch.randn(4, 3, 32, 32)
    out = augment(images, AugmentSettings(ops=ops), generator(0))
    assert torch.equal(out, images)


# --- crop ------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", [1, 4])
def test_crop_at_takes_exact_slices_of_the_padded_batch(padding):
    images = distinct_images(5, 3, 28)
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    last = 2 * padding
    offsets = torch.tensor([[0, 0], [last, last], [0, last], [last, 0], [padding - 1, padding + 1]])
    out = crop_at(images, padding, offsets)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, dy : dy + 28, dx : dx + 28])


def test_crop_with_zero_padding_is_identity():
    images = distinct_images(3, 1, 28)
    assert torch.equal(random_crop(images, 0, generator(0)), images)


def test_random_crop_picks_a_valid_window_per_image_and_varies():
    padding = 2
    images = distinct_images(1, 1, 8).expand(300, -1, -1, -1).contiguous()
    out = random_crop(images, padding, generator(0))
    matches = (all_windows(images, padding) == out).flatten(2).all(-1)  # (K, N)
    assert matches.any(0).all(), "some image is not any of the (2p+1)^2 windows"
    # Identical inputs, so the windows chosen show the offsets are drawn per image.
    used = matches.int().argmax(0).unique()
    assert len(used) == (2 * padding + 1) ** 2


# --- flip ------------------------------------------------------------------------------


def test_flip_is_exact_per_image_and_about_half():
    images = distinct_images(2000, 1, 4)
    out = random_flip(images, generator(0))
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert (flipped ^ kept).all(), "every image is either exactly mirrored or untouched"
    assert 0.45 < flipped.float().mean().item() < 0.55


# --- rotate ----------------------------------------------------------------------------


ANGLES = torch.tensor([0.0, 1.0, -7.5, 15.0, -15.0, 30.0, 45.0, -60.0, 90.0, 135.0, 180.0])


@pytest.mark.parametrize("h, w", [(28, 28), (32, 32), (96, 96), (28, 40)])
def test_rotation_grid_stays_inside_the_edge_pixel_centres(h, w):
    grid = rotation_grid(len(ANGLES), h, w, ANGLES, "cpu")
    # align_corners=False: ±1 is the outer edge of the border pixels, and bilinear sampling
    # beyond the border pixel *centres*, ±(1 - 1/size), already mixes in outside values. So
    # the grid must stay within the centres, which is stricter than [-1, 1].
    tol = 1e-6
    assert grid[..., 0].abs().max() <= 1 - 1 / w + tol
    assert grid[..., 1].abs().max() <= 1 - 1 / h + tol


@pytest.mark.parametrize("size", [28, 32, 96])
def test_rotation_of_ones_reads_no_outside_pixel(size):
    # With padding_mode="zeros", any weight on a pixel outside the image would pull the
    # result below 1; with the grid inside the image, bilinear of a constant is the constant.
    ones = torch.ones(len(ANGLES), 1, size, size)
    grid = rotation_grid(len(ANGLES), size, size, ANGLES, "cpu")
    sampled = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(sampled, ones, atol=1e-5, rtol=0)
    rotated = random_rotate(torch.ones(16, 1, size, size), 45.0, generator(0))
    torch.testing.assert_close(rotated, torch.ones_like(rotated), atol=1e-5, rtol=0)


def test_rotation_by_zero_is_identity():
    # 32 is a power of two, so pixel centres are exact in float32 normalised coordinates.
    images = torch.randn(4, 3, 32, 32, generator=generator(1))
    assert (random_rotate(images, 0.0, generator(0)) - images).abs().max() <= 1e-6
    # Other sizes put pixel centres at inexact normalised coordinates (e.g. k/28), so
    # bilinear picks up ~1e-6 px of the neighbour: tiny, but above 1e-6 on randn images.
    images = torch.randn(4, 3, 96, 96, generator=generator(1))
    torch.testing.assert_close(random_rotate(images, 0.0, generator(0)), images, atol=1e-4, rtol=0)


def test_rotation_by_90_degrees_is_rot90():
    # At 90° the zoom is 1, so the sampling grid lands on pixel centres.
    images = torch.randn(2, 3, 32, 32, generator=generator(1))
    grid = rotation_grid(2, 32, 32, torch.tensor([90.0, -90.0]), "cpu")
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(out[0], images[0].rot90(1, dims=(1, 2)), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1], images[1].rot90(-1, dims=(1, 2)), atol=1e-4, rtol=0)


def test_rotation_angle_is_drawn_per_image():
    images = torch.randn(1, 1, 32, 32, generator=generator(1)).expand(8, -1, -1, -1)
    out = random_rotate(images, 15.0, generator(0))
    assert len({tuple(row.tolist()) for row in out.flatten(1)[:, :64]}) == 8


# --- cutout ----------------------------------------------------------------------------


def test_cutout_at_zeroes_exactly_the_square():
    images = distinct_images(3, 3, 28)
    corners = torch.tensor([[0, 0], [20, 20], [5, 13]])
    out = cutout_at(images, 8, corners)
    expected = images.clone()
    for i, (y, x) in enumerate(corners.tolist()):
        expected[i, :, y : y + 8, x : x + 8] = 0
    assert torch.equal(out, expected)


def test_random_cutout_square_lies_inside_and_moves():
    images = distinct_images(300, 3, 28)
    out = random_cutout(images, 8, generator(0))
    zeros = out == 0
    assert (zeros.flatten(1).sum(1) == 3 * 8 * 8).all(), "a full 8x8 square in every channel"
    assert torch.equal(out[~zeros], images[~zeros])
    tops = zeros[:, 0].any(2).int().argmax(1)
    lefts = zeros[:, 0].any(1).int().argmax(1)
    assert tops.min() == 0 and tops.max() == 20 and lefts.min() == 0 and lefts.max() == 20


# --- the whole pipeline ----------------------------------------------------------------

ALL = AugmentSettings(ops=AUGMENTATIONS)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_batch_different_seed_different_batch(device):
    images = torch.randn(64, 3, 32, 32, device=device)
    first = augment(images, ALL, generator(7, device))
    again = augment(images, ALL, generator(7, device))
    other = augment(images, ALL, generator(8, device))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (3, 96)])
def test_shape_dtype_and_device_are_preserved(device, dtype, channels, size):
    images = torch.randn(6, channels, size, size, device=device).to(dtype)
    out = augment(images, ALL, generator(0, device))
    assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
    assert torch.isfinite(out.float()).all()
    assert out.data_ptr() != images.data_ptr()


def test_bfloat16_matches_float32_closely():
    images = torch.randn(16, 3, 32, 32)
    out16 = augment(images.bfloat16(), ALL, generator(3))
    out32 = augment(images.bfloat16().float(), ALL, generator(3))
    torch.testing.assert_close(out16.float(), out32, atol=0.05, rtol=0.02)


def test_ops_run_in_canonical_order(monkeypatch):
    calls = []
    for name in ("random_crop", "random_rotate", "random_flip", "random_cutout"):
        monkeypatch.setattr(aug, name, lambda images, *args, _n=name: calls.append(_n) or images)
    augment(torch.zeros(1, 1, 28, 28), AugmentSettings(ops=("cutout", "flip", "rotate", "crop")), generator(0))
    assert calls == ["random_crop", "random_rotate", "random_flip", "random_cutout"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_host_sync_on_cuda():
    images = torch.randn(256, 3, 32, 32, device="cuda")
    gen = generator(0, "cuda")
    augment(images, ALL, gen)  # warm-up: first calls may load kernels
    torch.cuda.set_sync_debug_mode("error")
    try:
        augment(images, ALL, gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
