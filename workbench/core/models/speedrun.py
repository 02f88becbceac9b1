"""A fast network in the style of airbench94: patch-whitened stem, 3 conv groups, scaled logits."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.models.registry import register

WIDTHS = (64, 256, 256)  # output channels of the three conv groups
BN_DECAY = 0.6  # running statistics keep 60% of their old value each step
LOGIT_SCALE = 1 / 9  # shrinks the initial logits, which keeps the first steps stable
PATCH = 2  # the whitening layer sees 2x2 patches


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    # The scale is frozen at 1: the following conv can learn any scale, and a fixed one
    # lets a high learning rate act on the shift alone.
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=1 - BN_DECAY)
    bn.weight.requires_grad_(False)
    return bn


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    # Identity-like start: the first channels pass their input through, so the deep
    # stack begins close to a shallow one and trains from the first step.
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


class ConvGroup(nn.Module):
    """conv3 -> maxpool2 -> BN -> GELU -> conv3 -> BN -> GELU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _conv3(cin, cout)
        self.norm1 = _batch_norm(cout)
        self.conv2 = _conv3(cout, cout)
        self.norm2 = _batch_norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class Speedrun(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        patch_dim = in_channels * PATCH * PATCH
        # Each whitened direction appears with both signs, so the GELU after it loses nothing.
        self.whiten = nn.Conv2d(in_channels, 2 * patch_dim, PATCH, padding=0, bias=True)
        # Frozen from the start, not only once init_whitening has run: a compiled model guards
        # on requires_grad, and flipping it after a warm-up would force a recompile.
        self.whiten.weight.requires_grad_(False)
        groups: list[nn.Module] = []
        cin = 2 * patch_dim
        for width in widths:
            groups.append(ConvGroup(cin, width))
            cin = width
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(cin, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
            # The whitening filters amplify the weakest patch directions up to 1/sqrt(eps) = 45x,
            # and bf16 rounding of the pixels with them: under autocast this tiny layer stays fp32.
            with torch.autocast(x.device.type, enabled=False):
                x = F.gelu(self.whiten(x.float()))
        else:
            x = F.gelu(self.whiten(x))
        x = self.groups(x)
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return self.head(x) * LOGIT_SCALE

    def init_from_data(self, images: torch.Tensor) -> None:
        """The data-dependent init every fresh run gets (any recipe): whiten on training images."""
        self.init_whitening(images)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4, chunk: int = 512) -> None:
        """Set the first layer to whiten 2x2 patches of `images` (normalised N,C,H,W) and freeze it.

        Filters are the patch covariance's eigenvectors divided by sqrt(eigenvalue + eps),
        largest first, followed by their negatives; the bias removes the patch mean, so the
        first half of the outputs has (close to) identity covariance on these images.
        """
        weight = self.whiten.weight
        dim = weight.shape[1] * PATCH * PATCH
        if images.ndim != 4 or images.shape[1] != weight.shape[1]:
            raise ValueError(
                f"expected images of shape (N, {weight.shape[1]}, H, W), got {tuple(images.shape)}"
            )
        # Accumulate in float64 over chunks: all patches of a data set would not fit in memory.
        total = torch.zeros(dim, device=images.device, dtype=torch.float64)
        outer = torch.zeros(dim, dim, device=images.device, dtype=torch.float64)
        count = 0
        for start in range(0, images.shape[0], chunk):
            batch = images[start : start + chunk].to(torch.float64)
            # Every 2x2 patch as a row, in the (channel, row, column) order a conv weight uses.
            # Strided views and one copy: F.unfold in float64 is ~50x slower on a CPU.
            windows = batch.unfold(2, PATCH, 1).unfold(3, PATCH, 1)  # (N, C, H-1, W-1, 2, 2)
            patches = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, dim)
            total += patches.sum(0)
            outer += patches.T @ patches
            count += patches.shape[0]
        mean = total / count
        covariance = outer / count - torch.outer(mean, mean)
        # A 12x12 eigenproblem: the CPU solves it at once, where a GPU solver needs a warm-up.
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.cpu())
        eigenvalues, eigenvectors = eigenvalues.to(images.device), eigenvectors.to(images.device)
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
        filters = torch.cat([filters, -filters])
        weight.copy_(filters.reshape(weight.shape).to(weight.dtype))
        self.whiten.bias.copy_((-(filters @ mean)).to(self.whiten.bias.dtype))
        weight.requires_grad_(False)


@register("speedrun")
def speedrun(in_channels: int, num_classes: int, image_size: int, widths=WIDTHS) -> nn.Module:
    return Speedrun(in_channels, num_classes, widths=tuple(widths))
