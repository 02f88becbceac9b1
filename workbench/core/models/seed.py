"""The seed documents' architectures, built so their CIFAR-10 parameter counts match exactly."""

from __future__ import annotations

import torch
import torch.nn as nn

from workbench.core.models.registry import register


@register("linear")
def linear(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))


@register("mlp")
def mlp(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size**2, 40),
        nn.ReLU(),
        nn.Linear(40, num_classes),
    )


@register("basic_cnn")
def basic_cnn(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    # Each unpadded conv5 trims 4 pixels and each pool halves (rounding down).
    side = ((image_size - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


@register("lenet5")
def lenet5(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    # LeNet-5 was designed for 32x32 inputs, with 28x28 digits padded to 32; larger images
    # are averaged down to the 5x5 map its first FC layer expects.
    padding = 2 if image_size < 32 else 0
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=padding),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(5),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.Tanh(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, num_classes),
    )


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class _Residual(nn.Module):
    """x + block(x), for a block that keeps the shape."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


@register("convbn")
def convbn(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 10, 5, padding=2), nn.ReLU()]
    for cin, cout in [(10, 20), (20, 40), (40, 80)]:
        # The seed normalises after the activation; kept as written to reproduce it.
        layers += [
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
            nn.ReLU(),
            nn.BatchNorm2d(cout),
        ]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(80, num_classes)]
    return nn.Sequential(*layers)


@register("deepbn")
def deepbn(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 10, 5, padding=2), nn.ReLU()]
    cin = 10
    for width in [20, 40, 80, 160]:
        layers += [_conv_bn_relu(cin, width, stride=2), _conv_bn_relu(width, width, stride=1)]
        cin = width
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


@register("seed_resnet")
def seed_resnet(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 5, padding=2), nn.ReLU()]
    cin = 16
    for width in [32, 64, 128, 256]:
        layers += [
            _conv_bn_relu(cin, width, stride=2),
            _Residual(_conv_bn_relu(width, width, stride=1)),
            _Residual(_conv_bn_relu(width, width, stride=1)),
        ]
        cin = width
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)
