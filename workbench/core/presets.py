"""Named recipes: a RunConfig to start from, chosen with --preset or in the app."""

from __future__ import annotations

from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError

PRESETS: dict[str, tuple[str, dict]] = {
    "seed-recipe": (
        "the seed tutorials' recipe: Adam lr 0.003, batch 32, 4 epochs, no augmentation, all 50k "
        "training images (no validation split, so no best-epoch selection)",
        dict(dataset="cifar10", arch="basic_cnn", epochs=4, batch_size=32, optimizer="adam",
             lr=0.003, weight_decay=0.0, schedule="constant", augment=(), momentum=0.9, val_fraction=0.0),
    ),
    "cifar10-resnet18": (
        "ResNet-18, SGD+Nesterov, one-cycle, crop+flip, label smoothing, bf16: ~95% in 30 epochs",
        dict(dataset="cifar10", arch="resnet18", epochs=30, batch_size=256, optimizer="nesterov",
             lr=0.2, momentum=0.9, weight_decay=5e-4, schedule="onecycle", label_smoothing=0.1,
             augment=("crop", "flip"), precision="bf16"),
    ),
    "cifar10-speedrun": (
        "the speedrun recipe (whitening, lookahead, TTA) on all 50k training images: aims at 94% "
        "in seconds on a GPU; no validation split, as airbench94 reports it",
        # The recipe brings its own optimizer, schedule and augmentation (see speedrun/recipe.py).
        dict(dataset="cifar10", arch="speedrun", recipe="speedrun", epochs=10, batch_size=1024,
             precision="bf16", compile=True, val_fraction=0.0),
    ),
    "shapes-quick": (
        "basic_cnn on the synthetic shapes set, 3 epochs: a CPU smoke test in seconds",
        dict(dataset="shapes", arch="basic_cnn", epochs=3, batch_size=64, optimizer="adamw",
             lr=0.003, schedule="cosine", augment=("flip",)),
    ),
}


def preset_config(name: str) -> RunConfig:
    try:
        _, values = PRESETS[name]
    except KeyError:
        raise ConfigError("preset", f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return RunConfig.from_mapping({**values, "preset": name})
