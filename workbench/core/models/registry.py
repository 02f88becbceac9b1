"""The architecture registry: `@register` adds a factory, `create` builds a model by name."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from workbench.core.catalog import ARCHITECTURES, USER_ARCH_HINT, arch_label, parse_user_arch
from workbench.core.errors import ConfigError, WorkbenchError

Factory = Callable[..., nn.Module]  # (in_channels, num_classes, image_size, **options)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str  # one line, shown in tables and the TUI list
    factory: Factory


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator: make `factory(in_channels, num_classes, image_size)` available by name.

    The name and its description must be in `workbench.core.catalog`, which torch-free code reads.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"model {name!r} is not in workbench/core/catalog.py")

    def add(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, ARCHITECTURES[name], factory)
        return factory

    return add


def names() -> list[str]:
    return [name for name in ARCHITECTURES if name in _REGISTRY]


def specs() -> list[ModelSpec]:
    return [_REGISTRY[name] for name in names()]


def get_spec(name: str) -> ModelSpec:
    """A registered architecture, or the user's own from `path/to/file.py:factory`."""
    user_file = parse_user_arch(name)
    if user_file is not None:
        from workbench.core.models import user_file as user

        file, factory = user_file
        return ModelSpec(arch_label(name), f"your network: {factory} in {file}",
                         lambda c, k, s: user.build(file, factory, c, k, s))
    try:
        return _REGISTRY[name]
    except KeyError:
        raise WorkbenchError(
            f"unknown architecture {name!r}; choose one of {', '.join(_REGISTRY)}, {USER_ARCH_HINT}"
        ) from None


def check_forward(name: str, model: nn.Module, in_channels: int, num_classes: int, image_size: int,
                  device: torch.device | str = "cpu") -> None:
    """For the user's own network: two blank images must give (2, num_classes) logits, else one line
    naming the file and line. (Built-in architectures are tested; they are passed by.)"""
    user_file = parse_user_arch(name)
    if user_file is not None:
        from workbench.core.models import user_file as user

        user.check_forward(model, user_file[0], in_channels, num_classes, image_size, device)


def create(name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, **options) -> nn.Module:
    """Build a fresh model that maps (N, in_channels, size, size) images to (N, num_classes) logits.

    `options` go to the factory (the speedrun's widths, say); a run records them, so export
    and resume build the same network.
    """
    spec = get_spec(name)
    try:
        return spec.factory(in_channels, num_classes, image_size, **options)
    except TypeError as error:
        if options:
            raise WorkbenchError(f"architecture {name!r} does not take the options {sorted(options)}: {error}") from None
        raise


def parameter_count(name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, **options) -> int:
    """Parameters of an architecture, counted on a model of shapes only (the meta device): no
    memory, no time and, above all, no draws from the global random generator, which a run
    training in another thread of the process relies on for its own init and dropout.
    Remembered per shape for built-in networks (the app's list asks again on every data set)."""
    key = (name, in_channels, num_classes, image_size)
    if not options and key in _COUNTED:
        return _COUNTED[key]
    with torch.device("meta"):
        counted = count_parameters(create(name, in_channels, num_classes, image_size, **options))
    if not options and name in _REGISTRY:  # a user's file may change: never remembered
        _COUNTED[key] = counted
    return counted


_COUNTED: dict[tuple[str, int, int, int], int] = {}
_PROBLEMS: dict[tuple[str, int, int, int], str] = {}


_SIZE_ERRORS = ("Kernel size", "Output size is too small", "input size", "shapes cannot be multiplied",
                "must be greater than", "too small")


def input_problem(name: str, in_channels: int, num_classes: int, image_size: int, **options) -> str:
    """Why the architecture cannot take (in_channels, image_size, image_size) images, or "".

    A forward pass on the meta device (shapes only: no memory, no time, no random draws). The
    user's own network is passed by: check_forward says what is wrong with it, naming its file."""
    if parse_user_arch(name):
        return ""
    key = (name, in_channels, num_classes, image_size)
    if not options and key in _PROBLEMS:
        return _PROBLEMS[key]
    if not options and _FITS.get(key):  # a list already found that it fits: nothing to say
        return ""
    problem = _problem_at(name, in_channels, num_classes, image_size, options)
    if problem == "":  # the layers shrink the images to nothing: name the smallest size that fits
        candidates = [*range(image_size + 1, 65), 96, 128, 192, 256, 384, 512]
        smallest = next((size for size in candidates if _problem_at(name, in_channels, num_classes, size, options) is None), None)
        need = f"at least {smallest} px a side" if smallest else "larger images"
        problem = f"{name} cannot take {image_size}x{image_size} images (its layers shrink them to nothing); it needs {need}"
    problem = problem or ""
    if not options:
        _PROBLEMS[key] = problem
    return problem


def fits(name: str, in_channels: int, num_classes: int, image_size: int) -> bool:
    """Whether input_problem would find nothing to say, from one forward pass: what a list of every
    network needs, without the search for the size that would fit (up to 60 passes a network)."""
    key = (name, in_channels, num_classes, image_size)
    if parse_user_arch(name) or key in _PROBLEMS:
        return not _PROBLEMS.get(key)
    if key not in _FITS:
        _FITS[key] = _problem_at(name, in_channels, num_classes, image_size, {}) is None
    return _FITS[key]


_FITS: dict[tuple[str, int, int, int], bool] = {}


def _problem_at(name: str, in_channels: int, num_classes: int, size: int, options: dict) -> str | None:
    """None when the network takes size x size images; else the factory's own sentence (a ViT's
    patches), or "" for a shape error of its layers. A built-in network that fits is counted on
    the way, so that listing it costs one model, not two."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "initializing zero-element tensors is a no-op"
            model = create(name, in_channels, num_classes, size, **options).eval()
            model(torch.zeros(1, in_channels, size, size))
    except ConfigError as error:
        return error.problem
    except RuntimeError as error:  # only a shape problem counts; anything else is not ours to judge
        return "" if any(words in str(error) for words in _SIZE_ERRORS) else None
    if not options and name in _REGISTRY:
        _COUNTED.setdefault((name, in_channels, num_classes, size), count_parameters(model))
    return None


def with_weights(name: str, in_channels: int, num_classes: int, image_size: int, weights: dict, **options) -> nn.Module:
    """The architecture holding `weights`, built without drawing random numbers (see
    parameter_count); raises RuntimeError when the weights do not fit, like load_state_dict."""
    with torch.device("meta"):
        model = create(name, in_channels, num_classes, image_size, **options)
    expected = {key: tensor.dtype for key, tensor in model.state_dict().items() if isinstance(tensor, torch.Tensor)}
    # assign=True keeps the given tensors, so weights saved in another type (a hand-made float16
    # or float64 file) would reach the forward pass as they are: give each the dtype the layer has.
    weights = {key: _as_dtype(key, tensor, expected.get(key)) for key, tensor in weights.items()}
    model.load_state_dict(weights, assign=True)
    missing = [key for key, tensor in (*model.named_parameters(), *model.named_buffers()) if tensor.is_meta]
    if missing and not set(missing) & set(expected):
        # Only non-persistent buffers (never saved: the network makes them in __init__) are left:
        # build it for real, its random draws kept from the global generator, and load into it.
        with torch.random.fork_rng(devices=[]):
            model = create(name, in_channels, num_classes, image_size, **options)
        model.load_state_dict(weights)
        return model
    if missing:
        raise RuntimeError(f"no weights for {', '.join(missing[:3])}")
    return model


def _as_dtype(key: str, value, dtype: torch.dtype | None):
    """A float tensor cast to the layer's float type, an integer one to its integer type; another
    mix (int8 values for float weights: quantized, or not weights at all) does not fit."""
    if not isinstance(value, torch.Tensor) or dtype is None or value.dtype == dtype:
        return value
    plain = not value.is_complex() and torch.bool not in (value.dtype, dtype)
    if plain and value.is_floating_point() == dtype.is_floating_point:
        return value.to(dtype)
    if plain and value.is_floating_point() and bool((value == value.round()).all()):  # a counter saved as float
        return value.to(dtype)
    raise RuntimeError(f"{key} holds {str(value.dtype).removeprefix('torch.')} values where the network "
                       f"keeps {str(dtype).removeprefix('torch.')}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def has_dropout(model: nn.Module) -> bool:
    """True when the model has a dropout layer, so Monte-Carlo dropout means something."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
