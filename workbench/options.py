"""Training flags <-> RunConfig: the one set of train options shared by the app, `train` and `bench`."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.core.catalog import recipe_names
from workbench.core.config import (
    AUGMENTATIONS,
    DATASET_NAMES,
    DEVICES,
    NORMALIZATIONS,
    OPTIMIZERS,
    PRECISIONS,
    RESIZE_MODES,
    SCHEDULES,
    RunConfig,
)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Every RunConfig setting as a flag; None means 'not given', so config files still apply."""
    d = RunConfig()
    group = parser.add_argument_group("training options (flags override --config)")
    add = group.add_argument
    add("--config", metavar="TOML", help="read settings from a TOML file (same keys as the flags)")
    add("--preset", metavar="NAME", help="start from a named recipe (see `workbench models`)")
    add("--dataset", help=f"{', '.join(DATASET_NAMES)}, or a folder in ImageFolder layout (default: {d.dataset})")
    add("--data-dir", help="where named data sets and decoded caches live (default: the user data folder)")
    add("--arch", help=f"architecture, see `workbench models` (default: {d.arch})")
    add("--recipe", choices=recipe_names(),
        help=f"how to train: standard (the flags below) or speedrun (its own optimizer, schedule and "
             f"augmentation; --arch speedrun) (default: {d.recipe})")
    add("--epochs", type=int, help=f"(default: {d.epochs})")
    add("--batch-size", type=int,
        help=f"images per optimizer step, the global batch: with several processes (torchrun, --gpus) each "
             f"takes an equal share, so the learning rate means the same (default: {d.batch_size})")
    add("--optimizer", choices=OPTIMIZERS, help=f"(default: {d.optimizer})")
    add("--lr", type=float, help=f"peak learning rate (default: {d.lr})")
    add("--momentum", type=float, help=f"SGD momentum or Adam beta1 (default: {d.momentum})")
    add("--weight-decay", type=float, help=f"(default: {d.weight_decay})")
    add("--schedule", choices=SCHEDULES, help=f"learning-rate schedule (default: {d.schedule})")
    add("--warmup-epochs", type=float, help=f"linear warm-up length (default: {d.warmup_epochs})")
    add("--label-smoothing", type=float, help=f"(default: {d.label_smoothing})")
    add("--augment", help=f"comma list of {', '.join(AUGMENTATIONS)}, or none (default: {','.join(d.augment)})")
    add("--image-size", type=int, help="pixels per side (default: the data set's own; 32 for folders)")
    add("--resize", choices=RESIZE_MODES,
        help=f"a folder image of another shape: stretch it, crop its centre square, or pad it (default: {d.resize})")
    add("--normalize", choices=NORMALIZATIONS,
        help="train: per-channel mean/std of the training split (exports carry them); none: pixels / 255 "
             f"only, as the seed tutorials' ToTensor (default: {d.normalize})")
    add("--precision", choices=PRECISIONS, help=f"(default: {d.precision})")
    add("--device", choices=DEVICES, help=f"auto = cuda, then mps, then cpu (default: {d.device})")
    add("--seed", type=int, help=f"(default: {d.seed})")
    add("--runs-dir", help=f"where run folders go (default: {d.runs_dir})")
    add("--val-fraction", type=float,
        help=f"share of the training data held out to pick the best epoch; 0 = none (default: {d.val_fraction})")
    add("--test-fraction", type=float,
        help=f"test share of a folder without test/ or val/ (default: {d.test_fraction})")
    add("--stream-over-mb", type=float,
        help="stream folders whose decoded size passes this from their files (default: a quarter of RAM)")
    add("--early-stop", type=int, metavar="EPOCHS",
        help="stop after this many evaluated epochs without a better validation metric; 0 = off (default: 0)")
    add("--early-stop-on", choices=("acc", "loss"), help="the metric early stopping watches (default: acc)")
    add("--early-stop-delta", type=float, help="the smallest change that counts as better (default: 0)")
    add("--keep-best", type=int, metavar="K",
        help="keep the K best epochs as checkpoints besides last.pt; best.pt stays the best (default: 1)")
    add("--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the model: slower start, faster GPU steps (default: off)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then a preset, then --config, then flags."""
    from workbench.core.presets import preset_config

    base = RunConfig()
    if getattr(args, "preset", None):
        base = preset_config(args.preset)
    if getattr(args, "config", None):
        base = RunConfig.from_toml(Path(args.config), base)
    flags = {
        field: getattr(args, field)
        for field in RunConfig.__dataclass_fields__
        if getattr(args, field, None) is not None
    }
    return RunConfig.from_mapping(flags, base)
