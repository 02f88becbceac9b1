"""Image classifiers by name: a registry plus one module per family of architectures.

Every model maps (N, C, H, W) float images to (N, num_classes) logits and works for
1 or 3 channels, any class count and square image sizes from 28 to 96.
"""

# Importing the families registers their architectures, in the order tables show them.
from workbench.core.models import classic, pretrained, resnets, seed, speedrun  # noqa: E402,F401
from workbench.core.models.registry import (
    ModelSpec,
    check_forward,
    count_parameters,
    create,
    fits,
    get_spec,
    has_dropout,
    input_problem,
    names,
    parameter_count,
    register,
    specs,
    with_weights,
)

__all__ = [
    "ModelSpec",
    "check_forward",
    "count_parameters",
    "create",
    "fits",
    "get_spec",
    "has_dropout",
    "input_problem",
    "names",
    "parameter_count",
    "register",
    "specs",
    "with_weights",
]
