"""`workbench bench`: the training engine and a seed-style PyTorch loop, timed side by side in one process.

Both sides train the same architecture at the same batch size on the same device from the
same image files. Data preparation (decoding, caching, writing PNGs) and a few warm-up steps
per side happen before any clock starts; the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from workbench.core.bench_reference import (
    WARMUP_STEPS,
    BenchData,
    EpochTiming,
    SideResult,
    cpu_seconds,
    prepare_data,
    run_reference,
)
from workbench.core.config import AUGMENTATIONS, DATASET_NAMES, DEVICES, OPTIMIZERS, PRECISIONS, RunConfig
from workbench.core.control import TrainControl
from workbench.core.errors import WorkbenchError

QUICK_TRAIN_IMAGES = 4096  # --quick: small enough for well under a minute on 2 CPU cores
QUICK_TEST_IMAGES = 1024
EXCLUDED = (
    "data preparation (loading or decoding the set, writing PNGs or links, the engine's decoded cache)",
    f"warm-up (per side, {WARMUP_STEPS} training steps on a throwaway model: for the engine a fit() stopped early)",
    "engine start-up before its first step (reading the cache, building the run folder)",
)
EXIT_OK, EXIT_FAILED = 0, 1
BUSY_SHARE = 0.25  # other programs using this share of the CPUs make wall times unreliable


class EngineFailed(Exception):
    """fit() reported a failure that is not the user's input (a bug or a broken library)."""


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


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Validate every option before any data is touched; WorkbenchError names the bad one."""
    config = RunConfig.from_mapping({
        "dataset": args.dataset, "data_dir": args.data_dir, "arch": args.arch,
        "epochs": args.epochs, "batch_size": args.batch_size,
        "device": args.device, "augment": args.augment, "precision": args.precision,
        "optimizer": args.optimizer, "lr": args.lr,
    })
    if args.workers < 0:
        raise WorkbenchError(f"--workers: {args.workers} must be 0 or more")
    if args.threads is not None and args.threads < 1:
        raise WorkbenchError(f"--threads: {args.threads} must be 1 or more")
    if args.max_images is not None and args.max_images < 1:
        raise WorkbenchError(f"--max-images: {args.max_images} must be 1 or more")
    if args.target_acc is not None and not 0 < args.target_acc <= 1:
        raise WorkbenchError(f"--target-acc: {args.target_acc} is outside (0, 1]; give a fraction such as 0.5")
    json_path = Path(args.json).expanduser() if args.json else None
    if json_path is not None and not json_path.parent.is_dir():
        raise WorkbenchError(f"--json: folder {json_path.parent} does not exist")
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


# ---- the engine side -------------------------------------------------------------------------


def run_engine(
    settings: BenchSettings, data: BenchData, workdir: Path, on_epoch: Callable[[EpochTiming], None]
) -> SideResult:
    """fit() on the prepared folder, timed from its own events (RunStarted, then each EpochMetrics)."""
    from workbench.core.engine import fit
    from workbench.core.events import EpochMetrics, Failed, RunStarted

    config = settings.config.replace(
        dataset=str(data.folder), data_dir=str(data.engine_data_dir),
        image_size=data.dataset.image_size, runs_dir=str(workdir / "runs"),
    )
    result = SideResult("engine")
    clock: dict[str, float] = {}
    failures: list[Failed] = []
    train_size = len(data.dataset.train)

    def sink(event) -> None:
        now = time.perf_counter()
        if isinstance(event, RunStarted):
            clock["start"] = clock["last"] = now
            clock["cpu"] = cpu_seconds()
            clock["images"] = min(event.steps_per_epoch * config.batch_size, train_size)  # drop_last
        elif isinstance(event, EpochMetrics):
            train_s = clock["images"] / max(event.images_per_s, 1e-9)
            cpu = cpu_seconds()
            timing = EpochTiming(
                event.epoch, int(clock["images"]), train_s, event.epoch_s - train_s,
                now - clock["last"], cpu - clock["cpu"], event.test_acc,
            )
            clock["last"], clock["cpu"] = now, cpu
            result.epochs.append(timing)
            target = settings.target_acc
            if target is not None and result.time_to_target_s is None and event.test_acc >= target:
                result.time_to_target_s = now - clock["start"]
            on_epoch(timing)
        elif isinstance(event, Failed):
            failures.append(event)

    # fit() turns on cudnn.benchmark for the process; the reference must run with the default.
    benchmark = torch.backends.cudnn.benchmark
    try:
        # Warm-up: the same fit() on the same data, stopped after a few steps, in its own runs folder.
        fit(config.replace(runs_dir=str(workdir / "warm-up")), lambda event: None, _StopAfter(WARMUP_STEPS))
        fit(config, sink, TrainControl())
    finally:
        torch.backends.cudnn.benchmark = benchmark
    if failures:
        if failures[0].bad_input:
            raise WorkbenchError(failures[0].reason)
        raise EngineFailed(failures[0].reason)
    return result


class _StopAfter(TrainControl):
    """A TrainControl that asks to stop once `steps` training steps are done.

    Steps are counted where the training loop waits out a pause (once per step), so stop checks
    made elsewhere, such as between decoding batches, neither count nor stop anything early.
    """

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps_left = steps

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        self.steps_left -= 1

    @property
    def stop_requested(self) -> bool:
        return self.steps_left <= 0


# ---- the command -----------------------------------------------------------------------------


def run_bench_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    threads = torch.get_num_threads()
    if settings.threads is not None:
        # On a busy machine fewer threads can be much faster: a parallel region waits for its slowest thread.
        torch.set_num_threads(settings.threads)
    try:
        return _bench(settings)
    finally:
        torch.set_num_threads(threads)


def _bench(settings: BenchSettings) -> int:
    from workbench.core.device import autocast_dtype, describe_device, pick_device

    config = settings.config
    device, _ = pick_device(config.device)
    autocast_dtype(config.precision, device)  # fp16 on a CPU is a bad input: say so before preparing
    machine = machine_info(device, describe_device(device))
    say = lambda line: print(line, flush=True)  # noqa: E731 - progress must show while it runs

    with tempfile.TemporaryDirectory(prefix="workbench-bench-") as temp:
        workdir = Path(temp)
        started = time.perf_counter()
        data = prepare_data(config, settings.max_images, settings.max_test_images, workdir, log=lambda message: None)
        prepared_s = time.perf_counter() - started
        machine["others_cpu_share"] = others_cpu_share()
        say(_header(settings, data, machine, prepared_s))
        try:
            engine = run_engine(settings, data, workdir, lambda t: say(_epoch_line("engine", t, config.epochs)))
        except EngineFailed as error:
            print(f"workbench: error: the engine failed: {error}", file=sys.stderr)
            return EXIT_FAILED
        reference = run_reference(
            data.folder, arch=config.arch, epochs=config.epochs, batch_size=config.batch_size,
            workers=settings.workers, device=device, optimizer_name=config.optimizer, lr=config.lr,
            momentum=config.momentum, augment=config.augment, image_size=data.dataset.image_size,
            resize=data.resize, mean=data.dataset.mean, std=data.dataset.std, seed=config.seed,
            target_acc=settings.target_acc,
            on_epoch=lambda t: say(_epoch_line("reference", t, config.epochs)),
        )
    machine["load_avg_after"] = _load_average()
    say(_summary(engine, reference, settings.target_acc))
    say(f"load average (1, 5, 15 min) before {_loads(machine['load_avg_before'])}, after {_loads(machine['load_avg_after'])}")
    if settings.json_path is not None:
        report = _report(settings, data, machine, prepared_s, engine, reference)
        settings.json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        say(f"wrote {settings.json_path}")
    return EXIT_OK


def machine_info(device: torch.device, device_name: str) -> dict:
    import torchvision

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "device": device.type,
        "device_name": device_name,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "load_avg_before": _load_average(),
    }


def others_cpu_share(seconds: float = 1.0) -> float | None:
    """Share of the machine's CPUs that other processes kept busy over the next `seconds` (Linux).

    The load average trails by a minute, so a bench started right after another one would
    blame that one's load on "other programs"; /proc/stat minus our own CPU time does not.
    """
    def busy_and_total() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy_0, total_0 = busy_and_total()
        own_0 = cpu_seconds()
        time.sleep(seconds)
        busy_1, total_1 = busy_and_total()
        own_s = cpu_seconds() - own_0
    except (OSError, ValueError, IndexError):
        return None
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    total_s = (total_1 - total_0) / ticks_per_s
    if total_s <= 0:
        return None
    return min(max(((busy_1 - busy_0) / ticks_per_s - own_s) / total_s, 0.0), 1.0)


def _load_average() -> list[float] | None:
    """Runnable processes per 1, 5 and 15 minutes: above the core count, the timings are shared."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _loads(values: list[float] | None) -> str:
    return "unknown" if values is None else " ".join(f"{value:.2f}" for value in values)


def ratios(engine: SideResult, reference: SideResult) -> dict[str, float]:
    """How many times faster the engine is: in training throughput and in epoch wall time."""
    return {
        "images_per_s": engine.images_per_s / max(reference.images_per_s, 1e-9),
        "epoch_s": reference.epoch_s / max(engine.epoch_s, 1e-9),
        "epoch_cpu_s": reference.epoch_cpu_s / max(engine.epoch_cpu_s, 1e-9),
    }


def _header(settings: BenchSettings, data: BenchData, machine: dict, prepared_s: float) -> str:
    config, dataset = settings.config, data.dataset
    size = dataset.image_size
    augment = ",".join(config.augment) or "none"
    others = machine.get("others_cpu_share")
    busy = ""
    if others is not None and others >= BUSY_SHARE:
        busy = (
            f"\n  warning: other programs were using {others:.0%} of the CPUs just before timing: "
            "wall times will vary; compare the CPU seconds, or try --threads 1"
        )
    return (
        f"bench: {config.arch} on {config.dataset} ({len(dataset.train):,} train / {len(dataset.test):,} test "
        f"images, {size}x{size}, {dataset.num_classes} classes; {data.source})\n"
        f"  batch {config.batch_size}, {config.epochs} epoch(s), {config.optimizer} lr {config.lr:g}, "
        f"augment {augment}, engine {config.precision} / reference fp32 with {settings.workers} workers\n"
        f"  {machine['device_name']}, torch {machine['torch']}, {machine['usable_cpus']} CPUs, "
        f"{machine['torch_threads']} torch threads, load average {_loads(machine['load_avg_before'])}\n"
        f"  not timed: {'; '.join(EXCLUDED)}; preparation took {prepared_s:.1f} s{busy}"
    )


def _epoch_line(side: str, t: EpochTiming, epochs: int) -> str:
    return (
        f"{side:<9} epoch {t.epoch}/{epochs}: train {t.images_per_s:8,.0f} images/s ({t.train_images:,} in "
        f"{t.train_s:.2f} s), eval {t.eval_s:.2f} s, epoch {t.wall_s:.2f} s (CPU {t.cpu_s:.2f} s), test acc {t.test_acc:.1%}"
    )


def _summary(engine: SideResult, reference: SideResult, target: float | None) -> str:
    ratio = ratios(engine, reference)
    lines = [
        f"{'':<10}{'train images/s':>16}{'s/epoch incl. eval':>20}{'CPU s/epoch':>13}",
        f"{'engine':<10}{engine.images_per_s:>16,.0f}{engine.epoch_s:>20.2f}{engine.epoch_cpu_s:>13.2f}",
        f"{'reference':<10}{reference.images_per_s:>16,.0f}{reference.epoch_s:>20.2f}{reference.epoch_cpu_s:>13.2f}",
        f"{'ratio':<10}{ratio['images_per_s']:>15.2f}x{ratio['epoch_s']:>19.2f}x{ratio['epoch_cpu_s']:>12.2f}x"
        "   (engine vs reference)",
        "  train images/s is over all timed epochs; the engine's epoch includes its checkpoint and image files;",
        "  CPU s counts the reference's DataLoader workers too, so it stays fair when other programs load the CPU",
    ]
    if target is not None:
        def reached(side: SideResult) -> str:
            return "not reached" if side.time_to_target_s is None else f"{side.time_to_target_s:.2f} s"

        lines.append(f"time to {target:.1%} test accuracy: engine {reached(engine)}, reference {reached(reference)}")
    return "\n".join(lines)


def _report(settings, data: BenchData, machine: dict, prepared_s: float, engine: SideResult, reference: SideResult) -> dict:
    config = settings.config
    return {
        "settings": {
            "dataset": config.dataset, "arch": config.arch, "epochs": config.epochs,
            "batch_size": config.batch_size, "device": config.device, "workers": settings.workers,
            "threads": settings.threads,
            "augment": list(config.augment), "precision": config.precision, "optimizer": config.optimizer,
            "lr": config.lr, "max_images": settings.max_images, "max_test_images": settings.max_test_images,
            "target_acc": settings.target_acc,
        },
        "data": {
            "source": data.source, "train_images": len(data.dataset.train), "test_images": len(data.dataset.test),
            "image_size": data.dataset.image_size, "classes": data.dataset.num_classes,
            "mean": list(data.dataset.mean), "std": list(data.dataset.std), "prepared_s": prepared_s,
        },
        "machine": machine,
        "excluded_from_timings": list(EXCLUDED),
        "engine": engine.to_dict(),
        "reference": reference.to_dict(),
        "ratio": ratios(engine, reference),
    }
