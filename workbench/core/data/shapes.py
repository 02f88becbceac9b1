"""The `shapes` data set: ten classes of coloured shapes and textures, drawn in code."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from workbench.core.data.types import Split
from workbench.core.errors import StopRequested, never_stop

CLASSES = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "horizontal stripes",
    "vertical stripes",
    "checkerboard",
    "star",
    "blob",
)
TRAIN_SIZE = 10_000
TEST_SIZE = 2_000
NATIVE_SIZE = 32
VERSION = 1  # bump whenever the drawing changes, so cached copies are rebuilt

# Fixed seeds: every run, whatever its own seed, sees the same images.
_TRAIN_SEED = 1_000_003
_TEST_SEED = 2_000_003
_CHUNK_PIXELS = 2**22  # pixels drawn at once: few large tensor ops, bounded memory at any size
_BACKGROUND_GRID = 4  # the background is this many random colours a side, smoothly upsampled
_STRIPE_TILT = math.radians(15)  # stripes keep their orientation, give or take this much
_CLASS_COLOUR_SHARE = 0.7  # images painted in their class's colours; the rest get random ones


def generate(
    image_size: int = NATIVE_SIZE, should_stop: Callable[[], bool] = never_stop
) -> tuple[Split, Split]:
    """The train (10,000) and test (2,000) splits, drawn at image_size pixels a side."""
    train = _draw_split(TRAIN_SIZE, image_size, _TRAIN_SEED, should_stop)
    test = _draw_split(TEST_SIZE, image_size, _TEST_SEED, should_stop)
    return train, test


def _draw_split(count: int, image_size: int, seed: int, should_stop: Callable[[], bool]) -> Split:
    generator = torch.Generator().manual_seed(seed)
    params = _draw_parameters(count, generator)
    images = torch.empty(count, 3, image_size, image_size, dtype=torch.uint8)
    step = max(1, _CHUNK_PIXELS // image_size**2)
    for start in range(0, count, step):
        if should_stop():
            raise StopRequested
        chunk = {key: value[start : start + step] for key, value in params.items()}
        images[start : start + step] = _render(chunk, image_size, generator)
    return Split(images=images, labels=params["label"].clone(), sources=None)


def _uniform(generator: torch.Generator, count: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _draw_parameters(count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Everything random about each image except pixel noise; independent of image size."""
    labels = (torch.arange(count) % len(CLASSES))[torch.randperm(count, generator=generator)]
    radius = _uniform(generator, count, 0.42, 0.8)  # image spans -1..1
    striped = (labels == CLASSES.index("horizontal stripes")) | (
        labels == CLASSES.index("vertical stripes")
    )
    angle = torch.where(
        striped,
        _uniform(generator, count, -_STRIPE_TILT, _STRIPE_TILT),
        _uniform(generator, count, 0.0, 2 * math.pi),
    )
    margin = 1 - 0.85 * radius
    foreground, background = _colours(labels, generator)
    return {
        "label": labels,
        "radius": radius,
        "angle": angle,
        "stretch": torch.exp(_uniform(generator, count, -0.15, 0.15)),
        "cx": (2 * torch.rand(count, generator=generator) - 1) * margin,
        "cy": (2 * torch.rand(count, generator=generator) - 1) * margin,
        "periods": _uniform(generator, count, 2.0, 3.2),  # stripes/checks across the patch
        "wobble": _uniform(generator, count * 2, 0.1, 0.2).view(count, 2),  # blob bumps
        "phase": _uniform(generator, count * 2, 0.0, 2 * math.pi).view(count, 2),
        "foreground": foreground,
        "background": background,
        "texture": _uniform(generator, count, 0.1, 0.35).view(count, 1, 1, 1)
        * (2 * torch.rand(count, 3, _BACKGROUND_GRID, _BACKGROUND_GRID, generator=generator) - 1),
        "noise": _uniform(generator, count, 0.02, 0.07),
    }


def _colours(labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background colours: most near the class's own pair, the rest random.

    The class colours play the part of context in photos (sky behind planes, grass under
    frogs): a cue a linear model can use, while the shape itself needs convolutions.
    """
    count = labels.shape[0]
    random_foreground = torch.rand(count, 3, generator=generator)
    random_background = _contrasting_colours(random_foreground, generator)
    hue = labels / len(CLASSES) + _uniform(generator, count, -0.05, 0.05)
    saturation = _uniform(generator, count * 2, 0.55, 1.0).view(2, count)
    class_foreground = _hsv_to_rgb(hue, saturation[0], _uniform(generator, count, 0.55, 1.0))
    class_background = _hsv_to_rgb(hue + 0.5, saturation[1], _uniform(generator, count, 0.3, 0.9))
    use_class = (torch.rand(count, generator=generator) < _CLASS_COLOUR_SHARE).view(-1, 1)
    foreground = torch.where(use_class, class_foreground, random_foreground)
    background = torch.where(use_class, class_background, random_background)
    return foreground, background


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """(N,) hue (turns, wraps), saturation and value in 0..1 -> (N, 3) RGB in 0..1."""
    sector = torch.remainder(hue, 1.0).unsqueeze(1) * 6 + torch.tensor([5.0, 3.0, 1.0])
    ramp = (4 - torch.remainder(sector, 6)).clamp(0, 1).minimum(torch.remainder(sector, 6))
    return value.unsqueeze(1) * (1 - saturation.unsqueeze(1) * ramp.clamp(0, 1))


def _contrasting_colours(foreground: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A background colour per image far enough from its foreground to keep the shape visible."""
    candidates = torch.rand(foreground.shape[0], 6, 3, generator=generator)
    distance = (candidates - foreground[:, None, :]).norm(dim=2)
    far_enough = distance > 0.45
    first_far = far_enough.int().argmax(dim=1)
    chosen = torch.where(far_enough.any(dim=1), first_far, distance.argmax(dim=1))
    return candidates[torch.arange(len(chosen)), chosen]


def _render(params: dict[str, torch.Tensor], size: int, generator: torch.Generator) -> torch.Tensor:
    count = params["label"].shape[0]
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    dx = centres.view(1, 1, size) - params["cx"].view(-1, 1, 1)
    dy = centres.view(1, size, 1) - params["cy"].view(-1, 1, 1)
    cos, sin = params["angle"].cos().view(-1, 1, 1), params["angle"].sin().view(-1, 1, 1)
    radius = params["radius"].view(-1, 1, 1)
    stretch = params["stretch"].view(-1, 1, 1)
    u = (dx * cos + dy * sin) / (radius * stretch)
    v = (dy * cos - dx * sin) * stretch / radius

    distance = torch.empty(count, size, size)
    for label, shape in enumerate(_SHAPES):
        chosen = (params["label"] == label).nonzero().squeeze(1)
        if len(chosen):
            distance[chosen] = shape(u[chosen], v[chosen], params, chosen)
    pixel = 2 / size
    coverage = (0.5 - distance * radius / pixel).clamp(0, 1).unsqueeze(1)  # soft, anti-aliased edge

    background = params["background"].view(-1, 3, 1, 1) + params["texture"]
    background = F.interpolate(background, size=(size, size), mode="bilinear", align_corners=False)
    foreground = params["foreground"].view(-1, 3, 1, 1)
    image = background * (1 - coverage) + foreground * coverage
    noise = torch.randn(count, 3, size, size, generator=generator)
    image = image + noise * params["noise"].view(-1, 1, 1, 1)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


# ---- shapes as signed distances --------------------------------------------------------------
# Each takes local coordinates (u, v), where the shape spans about -1..1, and returns a signed
# distance in those units: negative inside. Distances make anti-aliased edges cheap.

_Params = dict[str, torch.Tensor]


def _box(u: torch.Tensor, v: torch.Tensor, half_u: float, half_v: float) -> torch.Tensor:
    return torch.maximum(u.abs() - half_u, v.abs() - half_v)


def _circle(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    return torch.hypot(u, v) - 1


def _square(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    return _box(u, v, 0.8, 0.8)


def _triangle(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    sides = [
        u * math.cos(a) + v * math.sin(a) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)
    ]
    return torch.stack(sides).amax(dim=0) - 0.5


def _cross(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    return torch.minimum(_box(u, v, 0.3, 1.0), _box(u, v, 1.0, 0.3))


def _ring(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    return (torch.hypot(u, v) - 0.72).abs() - 0.28


def _stripes(across: torch.Tensor, u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    period = 1.8 / params["periods"][chosen].view(-1, 1, 1)
    within = torch.remainder(across / period, 1.0) - 0.5
    stripe = (within.abs() - 0.25) * period
    return torch.maximum(_box(u, v, 0.9, 0.9), stripe)


def _horizontal_stripes(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    return _stripes(v, u, v, params, chosen)


def _vertical_stripes(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    return _stripes(u, u, v, params, chosen)


def _checkerboard(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    period = 2 * 1.8 / (params["periods"][chosen].view(-1, 1, 1) + 1)  # 3 to 4.2 checks across
    a = torch.remainder(u / period, 1.0) - 0.5
    b = torch.remainder(v / period, 1.0) - 0.5
    to_edge = torch.stack([a.abs(), 0.5 - a.abs(), b.abs(), 0.5 - b.abs()]).amin(dim=0) * period
    checks = torch.where(a * b > 0, -to_edge, to_edge)
    return torch.maximum(_box(u, v, 0.9, 0.9), checks)


def _star(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    bearing = torch.atan2(v, u)
    edge = 0.42 + 0.58 * ((1 + torch.cos(5 * bearing)) / 2) ** 1.5
    return (torch.hypot(u, v) - edge) * 0.6  # the edge is steep between the points


def _blob(u, v, params: _Params, chosen: torch.Tensor) -> torch.Tensor:
    bearing = torch.atan2(v, u)
    wobble = params["wobble"][chosen].view(-1, 2, 1, 1)
    phase = params["phase"][chosen].view(-1, 2, 1, 1)
    edge = 0.8 + wobble[:, 0] * torch.cos(2 * bearing + phase[:, 0])
    edge = edge + wobble[:, 1] * torch.cos(3 * bearing + phase[:, 1])
    return (torch.hypot(u, v) - edge) * 0.8


_SHAPES = (
    _circle,
    _square,
    _triangle,
    _cross,
    _ring,
    _horizontal_stripes,
    _vertical_stripes,
    _checkerboard,
    _star,
    _blob,
)
