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
    """conv3 -> BN -> ReLU, the usual order (our _v2 models). No conv bias: BN's shift covers it."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


def _seed_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    """The seed's BnLayer: conv3 -> ReLU -> BN, normalising after the activation.

    The seed also defines a Dropout2d(0.2) here but never calls it, so there is none.
    """
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.ReLU(),
        nn.BatchNorm2d(cout),
    )


class _Residual(nn.Module):
    """x + block(x), for a block that keeps the shape (the seed's ResnetLayer: x + BN(ReLU(conv(x))))."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _stem(in_channels: int, width: int, activation: bool) -> list[nn.Module]:
    # The seed's first conv5 has no activation after it; the _v2 models add a ReLU.
    conv = nn.Conv2d(in_channels, width, 5, padding=2)
    return [conv, nn.ReLU()] if activation else [conv]


def _head(width: int, num_classes: int, pool: type[nn.Module]) -> list[nn.Module]:
    return [pool(1), nn.Flatten(), nn.Linear(width, num_classes)]


@register("convbn")
def convbn(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    layers = _stem(in_channels, 10, activation=False)
    for cin, cout in [(10, 20), (20, 40), (40, 80)]:
        layers.append(_seed_block(cin, cout, stride=2))
    return nn.Sequential(*layers, *_head(80, num_classes, nn.AdaptiveAvgPool2d))


def _deepbn(in_channels: int, num_classes: int, block, stem_relu: bool) -> nn.Module:
    layers, cin = _stem(in_channels, 10, stem_relu), 10
    for width in [20, 40, 80, 160]:
        layers += [block(cin, width, stride=2), block(width, width, stride=1)]
        cin = width
    return nn.Sequential(*layers, *_head(cin, num_classes, nn.AdaptiveMaxPool2d))


def _seed_resnet(in_channels: int, num_classes: int, block, stem_relu: bool) -> nn.Module:
    layers, cin = _stem(in_channels, 16, stem_relu), 16
    for width in [32, 64, 128, 256]:
        layers += [block(cin, width, stride=2),
                   _Residual(block(width, width, stride=1)), _Residual(block(width, width, stride=1))]
        cin = width
    return nn.Sequential(*layers, *_head(cin, num_classes, nn.AdaptiveMaxPool2d))


@register("deepbn")
def deepbn(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _deepbn(in_channels, num_classes, _seed_block, stem_relu=False)


@register("deepbn_v2")
def deepbn_v2(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _deepbn(in_channels, num_classes, _conv_bn_relu, stem_relu=True)


@register("seed_resnet")
def seed_resnet(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _seed_resnet(in_channels, num_classes, _seed_block, stem_relu=False)


@register("seed_resnet_v2")
def seed_resnet_v2(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return _seed_resnet(in_channels, num_classes, _conv_bn_relu, stem_relu=True)
