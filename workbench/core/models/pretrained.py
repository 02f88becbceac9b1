"""torchvision's ImageNet-trained classifiers as architectures (`tv:resnet18`, ...), and their weights.

The factory builds the network with a head for this data set's classes and no weights; a run's
starting weights (core/training/start.py) are then loaded into it, so parameter counts, export
and resume build these like any other architecture. The weights come from torch's own cache
(torch.hub, `$TORCH_HOME/hub/checkpoints`), downloaded once when the machine is online.
torchvision is imported only when one of these is built: it costs a second and a half.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from workbench.core.catalog import ARCHITECTURES, PRETRAINED_PREFIX
from workbench.core.errors import ConfigError
from workbench.core.models.registry import register

DOWNLOAD_TIMEOUT_S = 30  # a machine without a network says so in seconds, not minutes


@dataclass(frozen=True)
class Preprocessing:
    """What the weights were trained on: the input size, the per-channel mean and std, the resize."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "crop"  # torchvision's resize of the shorter side, then a centre crop


def builder_name(arch: str) -> str:
    return arch.removeprefix(PRETRAINED_PREFIX)


def weights_enum(arch: str):
    """torchvision's default (best) weights of the architecture, e.g. ResNet18_Weights.IMAGENET1K_V1."""
    import torchvision.models

    return torchvision.models.get_model_weights(builder_name(arch)).DEFAULT


def preprocessing(arch: str) -> Preprocessing:
    transforms = weights_enum(arch).transforms()
    return Preprocessing(int(transforms.crop_size[0]), tuple(transforms.mean), tuple(transforms.std))


def weights_file(arch: str) -> Path:
    """Where torch keeps the weights file once downloaded (the name carries a hash prefix)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / weights_enum(arch).url.rsplit("/", 1)[-1]


def fetch_weights(arch: str) -> Path:
    """The weights file in torch's cache, downloaded first when it is not there; offline, one sentence
    that names the file, where it comes from and the folder to put it in."""
    import torch.hub

    weights, file = weights_enum(arch), weights_file(arch)
    if file.is_file():
        return file
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(file), progress=False)
    except (OSError, ValueError) as error:  # URLError is an OSError: no network, a proxy, a full disk
        reason = getattr(error, "reason", None) or error.strerror or error
        raise ConfigError(
            "weights", f"the ImageNet weights of {arch} ({weights}) are not on this machine and could not be "
            f"downloaded ({reason}); put {file.name} from {weights.url} into {file.parent}, or give a weights "
            "file of your own, or none"
        ) from None
    finally:
        socket.setdefaulttimeout(before)
    return file


def adapt_state(arch: str, state: dict, image_size: int) -> dict:
    """The weights as this network at `image_size` takes them: a ViT's position grid interpolated
    to the new number of patches (torchvision's own function), everything else as it is."""
    if builder_name(arch).startswith("vit_") and "encoder.pos_embedding" in state:
        from torchvision.models.vision_transformer import interpolate_embeddings

        patch = int(builder_name(arch).rsplit("_", 1)[-1])
        return interpolate_embeddings(image_size, patch, state)
    return state


def stem_weights(source: torch.Tensor, channels: int) -> torch.Tensor:
    """An RGB stem's kernels for `channels` input channels, as timm adapts them: grey images take
    the sum over RGB; other counts repeat RGB and rescale, so a plain image gives the same response."""
    if channels == 1:
        return source.sum(dim=1, keepdim=True)
    repeated = source.repeat(1, (channels + 2) // 3, 1, 1)[:, :channels]
    return repeated * (3 / channels)


def _with_stem_for(model: nn.Module, channels: int) -> nn.Module:
    """The network's first colour convolution replaced by one that takes `channels` channels."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                setattr(parent, name, nn.Conv2d(
                    channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                    child.dilation, child.groups, child.bias is not None, child.padding_mode))
                return model
    return model


def _factory(arch: str):
    def build(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        import torchvision.models

        extra = {}
        if builder_name(arch).startswith("vit_"):
            patch = int(builder_name(arch).rsplit("_", 1)[-1])
            if image_size % patch:
                raise ConfigError("image_size", f"{arch} cuts images into {patch} px patches: give a multiple of "
                                                f"{patch} (224, its own, or {-(-image_size // patch) * patch})")
            extra = {"image_size": image_size}
        model = torchvision.models.get_model(builder_name(arch), weights=None, num_classes=num_classes, **extra)
        return model if in_channels == 3 else _with_stem_for(model, in_channels)

    return build


for _name in ARCHITECTURES:
    if _name.startswith(PRETRAINED_PREFIX):
        register(_name)(_factory(_name))
