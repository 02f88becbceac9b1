"""Classic plain convolutional networks: VGG-11 with BatchNorm and Network in Network."""

from __future__ import annotations

import torch.nn as nn

from workbench.core.models.registry import register

_VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


@register("vgg11_bn")
def vgg11_bn(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    layers: list[nn.Module] = []
    cin, side = in_channels, image_size
    for item in _VGG11:
        if item == "M":
            # Small images reach 1x1 before the last pool; pooling further would fail.
            if side > 1:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            continue
        layers += [
            nn.Conv2d(cin, item, 3, padding=1, bias=False),
            nn.BatchNorm2d(item),
            nn.ReLU(inplace=True),
        ]
        cin = item
    # Large images end above 1x1; averaging makes the classifier size-independent.
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(cin, 512),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(512, num_classes),
    ]
    return nn.Sequential(*layers)


def _mlpconv(
    cin: int, widths: tuple[int, int, int], kernel: int, relu_last: bool = True
) -> list[nn.Module]:
    """A spatial conv followed by two 1x1 convs: a small MLP slid over every position."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, widths[0], kernel, padding=kernel // 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(widths[0], widths[1], 1),
        nn.ReLU(inplace=True),
    ]
    layers.append(nn.Conv2d(widths[1], widths[2], 1))
    if relu_last:
        layers.append(nn.ReLU(inplace=True))
    return layers


@register("nin")
def nin(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return nn.Sequential(
        *_mlpconv(in_channels, (192, 160, 96), kernel=5),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Dropout(0.5),
        *_mlpconv(96, (192, 192, 192), kernel=5),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Dropout(0.5),
        # The last 1x1 conv emits one map per class; no ReLU so logits can be negative.
        *_mlpconv(192, (192, 192, num_classes), kernel=3, relu_last=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
