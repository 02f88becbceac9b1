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
from pathlib import Path

import torch

from workbench.bench.engine_side import EngineFailed, run_engine
from workbench.bench.reference import (
    WARMUP_STEPS,
    BenchData,
    EpochTiming,
    SideResult,
    cpu_seconds,
    prepare_data,
    run_reference,
)
from workbench.bench.settings import BenchSettings, settings_from_args
from workbench.core import exit_codes
from workbench.core.shown import shown

EXCLUDED = (
    "data preparation (loading or decoding the set, writing PNGs or links, the engine's decoded cache)",
    f"warm-up (per side, {WARMUP_STEPS} training steps on a throwaway model: for the engine a fit() stopped early)",
    "engine start-up before its first step (reading the cache, building the run folder)",
)
EXIT_OK, EXIT_FAILED = exit_codes.OK, exit_codes.FAILED
BUSY_SHARE = 0.25  # other programs using this share of the CPUs make wall times unreliable

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
    from workbench.core.training.device import (
        autocast_dtype,
        describe_device,
        pick_device,
    )

    config = settings.config
    device, _ = pick_device(config.device)
    autocast_dtype(config.precision, device)  # fp16 on a CPU is a bad input: say so before preparing
    machine = machine_info(device, describe_device(device))
    say = lambda line: print(shown(line), flush=True)  # noqa: E731 - progress must show while it runs

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
            print(f"workbench: error: the engine failed: {shown(error)}", file=sys.stderr)
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
