"""Residual networks for small images: a CIFAR ResNet-18 and a Shake-Shake ResNet-26."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.core.models.registry import register


class BasicBlock(nn.Module):
    """Two conv3-BN layers plus a shortcut (a strided 1x1 conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        # CIFAR variant: a 3x3 stride-1 stem and no max pool, so 32x32 inputs keep detail.
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        cin = 64
        for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            blocks += [BasicBlock(cin, width, stride), BasicBlock(width, width, 1)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


@register("resnet18")
def resnet18(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return ResNet18(in_channels, num_classes)


class _Shake(torch.autograd.Function):
    """Mixes two branches with a random weight per sample, and the gradient with a fresh one."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        alpha = torch.rand(a.shape[0], 1, 1, 1, device=a.device, dtype=a.dtype)
        return alpha * a + (1 - alpha) * b

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Drawing beta independently of alpha is the "shake" in the backward pass.
        beta = torch.rand(grad.shape[0], 1, 1, 1, device=grad.device, dtype=grad.dtype)
        return beta * grad, (1 - beta) * grad


def _shake_branch(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
    )


class _TwoPathShortcut(nn.Module):
    """Shortcut for a shape change: two strided 1x1 convs, the second on a one-pixel shift.

    The shift makes the second path sample the pixels the first one skips.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.path1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.path2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        a = self.path1(x[:, :, :: self.stride, :: self.stride])
        b = self.path2(shifted[:, :, :: self.stride, :: self.stride])
        return self.bn(torch.cat([a, b], dim=1))


class ShakeBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.branch1 = _shake_branch(cin, cout, stride)
        self.branch2 = _shake_branch(cin, cout, stride)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = _TwoPathShortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.branch1(x), self.branch2(x)
        mixed = _Shake.apply(a, b) if self.training else 0.5 * (a + b)
        return self.shortcut(x) + mixed


class ShakeShake(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 26, base_width: int = 32):
        super().__init__()
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        )
        blocks: list[nn.Module] = []
        cin = 16
        for stage in range(3):
            width = base_width * 2**stage
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(ShakeBlock(cin, width, stride))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.blocks(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register("shake_shake")
def shake_shake(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return ShakeShake(in_channels, num_classes)
