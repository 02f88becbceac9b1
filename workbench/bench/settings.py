"""`workbench bench` options: parsed and checked before any data is touched."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from workbench.core.config import (
    AUGMENTATIONS,
    DATASET_NAMES,
    DEVICES,
    OPTIMIZERS,
    PRECISIONS,
    RunConfig,
)
from workbench.core.errors import ConfigError

QUICK_TRAIN_IMAGES = 4096  # --quick: small enough for well under a minute on 2 CPU cores
QUICK_TEST_IMAGES = 1024


def add_bench_options(parser: argparse.ArgumentParser) -> None:
    d = RunConfig()
    add = parser.add_argument
    add("--dataset", default="shapes", help=f"{', '.join(DATASET_NAMES)}, or a folder in ImageFolder layout (default: shapes)")
    add("--data-dir", help="where named data sets and decoded caches live (default: the user data folder)")
    add("--arch", default="basic_cnn", help="architecture, see `workbench models` (default: basic_cnn)")
    add("--epochs", type=int, default=1, help="timed epochs per side (default: 1)")
    add("--batch-size", type=int, default=128, help="(default: 128)")
    add("--device", choices=DEVICES, default="auto", help="(default: auto)")
    add("--workers", type=int, default=2, help="DataLoader worker processes of the reference loop (default: 2)")
    add("--threads", type=int, help="torch threads for both sides' training (default: torch's own choice)")
    add("--augment", default="none", help=f"comma list of {', '.join(AUGMENTATIONS)}, or none (default: none)")
    add("--precision", choices=PRECISIONS, default="fp32", help="the engine's precision; the reference is fp32 (default: fp32)")
    add("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"both sides (default: {d.optimizer})")
    add("--lr", type=float, default=d.lr, help=f"both sides (default: {d.lr})")
    add("--max-images", type=int, help="train images per side, evenly per class (default: all)")
    add("--quick", action="store_true",
        help=f"at most {QUICK_TRAIN_IMAGES} train / {QUICK_TEST_IMAGES} test images: a check in under a minute")
    add("--target-acc", type=float, metavar="X", help="also time how long each side takes to reach test accuracy X (0..1)")
    add("--json", metavar="PATH", help="write every number and the machine's description as JSON")


@dataclass(frozen=True)
class BenchSettings:
    config: RunConfig  # the engine's settings; its dataset is the name or folder as given
    workers: int
    threads: int | None  # torch intra-op threads for both sides; None leaves torch's default
    max_images: int | None
    max_test_images: int | None
    target_acc: float | None
    json_path: Path | None


def most_processes() -> int:
    """The most workers or threads worth asking for: more only thrash (or crash torch's thread pool)."""
    return 4 * max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 1)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Validate every option before any data is touched; ConfigError names the bad one."""
    config = RunConfig.from_mapping({
        "dataset": args.dataset, "data_dir": args.data_dir, "arch": args.arch,
        "epochs": args.epochs, "batch_size": args.batch_size,
        "device": args.device, "augment": args.augment, "precision": args.precision,
        "optimizer": args.optimizer, "lr": args.lr,
    })
    most = most_processes()
    if not 0 <= args.workers <= most:
        raise ConfigError("workers", f"{args.workers} is outside 0 to {most} (4 per CPU core of this machine)")
    if args.threads is not None and not 1 <= args.threads <= most:
        raise ConfigError("threads", f"{args.threads} is outside 1 to {most} (4 per CPU core of this machine)")
    if args.max_images is not None and args.max_images < 1:
        raise ConfigError("max_images", f"{args.max_images} must be 1 or more")
    if args.target_acc is not None and not 0 < args.target_acc <= 1:
        raise ConfigError("target_acc", f"{args.target_acc} is outside (0, 1]; give a fraction such as 0.5")
    json_path = Path(args.json).expanduser() if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise ConfigError("json", f"folder {json_path.parent} does not exist")
    max_images = args.max_images
    if args.quick and max_images is None:
        max_images = QUICK_TRAIN_IMAGES
    return BenchSettings(
        config=config,
        workers=args.workers,
        threads=args.threads,
        max_images=max_images,
        max_test_images=QUICK_TEST_IMAGES if args.quick else None,
        target_acc=args.target_acc,
        json_path=json_path,
    )
