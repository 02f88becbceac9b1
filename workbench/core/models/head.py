"""Which part of a network is its head: the layer fine-tuning trains first and a new set of classes replaces."""

from __future__ import annotations

import torch.nn as nn


def head_module(model: nn.Module) -> nn.Module:
    """The last module with parameters of its own that the network defines: resnet's fc, a ViT's
    heads.head, a classifier's last Linear, the last 1x1 convolution of a network without one."""
    owners = [module for module in model.modules() if any(True for _ in module.parameters(recurse=False))]
    if not owners:
        raise ValueError("the network has no parameters")
    return owners[-1]


def head_name(model: nn.Module) -> str:
    """The head's dotted name in the model, e.g. "fc" or "classifier.3"."""
    head = head_module(model)
    return next(name for name, module in model.named_modules() if module is head)


def split_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Module]]:
    """(head parameters, backbone parameters, the backbone's BatchNorm layers); see head_module."""
    head_layer = head_module(model)
    head = list(head_layer.parameters(recurse=False))
    chosen = {id(param) for param in head}
    backbone = [param for param in model.parameters() if id(param) not in chosen]
    norms = [module for module in model.modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm) and module is not head_layer]
    return head, backbone, norms
