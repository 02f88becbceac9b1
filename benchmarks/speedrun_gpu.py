"""Measure the cifar10-speedrun recipe: accuracy and time per seed, one table, and a JSON file.

On a GPU machine, from the repository root (no network needed):

    mkdir -p ~/data && tar xzf ../shared/data/cifar10-jpg.tar.gz -C ~/data
    python benchmarks/speedrun_gpu.py ~/data/cifar10 --seeds 5 --out speedrun.json

Timed per seed: whitening init + training loop + final test-time-augmented evaluation
(device-synchronised). Excluded and reported apart: decoding/caching the data (once),
moving it to the device, and the compile + cuDNN warm-up (large on the first seed, small
after it, since later seeds reuse the compiled graphs). `--epochs 10 12` measures several
epoch counts in one go; `--set key=value` overrides any entry of HYPERPARAMETERS.
`--device cpu --train-subset 8192 --test-subset 2000` is a (slow) CPU smoke check.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from workbench.core.config import RunConfig  # noqa: E402
from workbench.core.control import TrainControl  # noqa: E402
from workbench.core.data import Dataset, Split, load_dataset  # noqa: E402
from workbench.core.device import describe_device, pick_device  # noqa: E402
from workbench.core.errors import WorkbenchError  # noqa: E402
from workbench.core.events import EpochMetrics, Notice  # noqa: E402
from workbench.core.speedrun_train import HYPERPARAMETERS, SpeedrunResult, fit_speedrun  # noqa: E402

TARGET_ACC = 0.94
TARGET_S = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="CIFAR-10 folder in ImageFolder layout (train/, test/), or a set name")
    parser.add_argument("--data-dir", default=str(Path.home() / ".cache" / "workbench-bench"),
                        help="where the decoded uint8 cache is kept (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default: 5)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, nargs="+", default=[HYPERPARAMETERS["epochs"]],
                        help="epoch count(s) to measure (default: %(default)s)")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="cuda", choices=("auto", "cuda", "cpu", "mps"))
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode, e.g. max-autotune-no-cudagraphs (default: the default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a hyperparameter, e.g. --set tta_level=1 --set widths=(64,256,256)")
    parser.add_argument("--train-subset", type=int, default=0, help="use only the first N training images")
    parser.add_argument("--test-subset", type=int, default=0, help="use only the first N test images")
    parser.add_argument("--out", type=Path, default=None, help="write all results as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return parser.parse_args(argv)


def overrides(pairs: list[str]) -> dict:
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in HYPERPARAMETERS:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(HYPERPARAMETERS)}")
        try:
            values[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            values[key] = raw
    return values


def subset(data: Dataset, train: int, test: int) -> Dataset:
    def cut(split: Split, n: int) -> Split:
        if not n or n >= len(split):
            return split
        # Keep the classes balanced-ish: the folder loader stores images class by class.
        positions = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n].sort().values
        return Split(split.images[positions].contiguous(), split.labels[positions].contiguous(), None)

    return Dataset(data.name, data.classes, cut(data.train, train), cut(data.test, test), data.mean, data.std)


def make_config(args: argparse.Namespace, epochs: int, seed: int) -> RunConfig:
    changes = dict(dataset=args.data, data_dir=args.data_dir, epochs=epochs, seed=seed,
                   precision=args.precision, device=args.device, compile=not args.no_compile)
    try:
        from workbench.core.presets import preset_config

        return preset_config("cifar10-speedrun").replace(**changes)
    except WorkbenchError:  # the preset is not wired in yet: the same values by hand
        return RunConfig.from_mapping(dict(
            arch="speedrun", batch_size=HYPERPARAMETERS["batch_size"], optimizer="nesterov",
            momentum=HYPERPARAMETERS["momentum"], label_smoothing=HYPERPARAMETERS["label_smoothing"],
            augment=("crop", "flip"), preset="cifar10-speedrun", **changes,
        ))


def printer(quiet: bool):
    def sink(event) -> None:
        if isinstance(event, Notice) and not event.message.startswith("speedrun recipe"):
            print(f"    {event.message}", flush=True)
        elif isinstance(event, EpochMetrics) and not quiet:
            test = f"  test {event.test_acc:.2%}" if event.per_class_acc else ""
            print(f"    epoch {event.epoch:2d}/{event.epochs}  train loss {event.train_loss:.3f}  "
                  f"train acc {event.train_acc:.2%}{test}  {event.epoch_s:.2f} s", flush=True)
    return sink


def row(result: SpeedrunResult, seed: int, epochs: int) -> dict:
    return {
        "epochs": epochs, "seed": seed, "tta_acc": result.tta_acc, "acc": result.acc,
        "test_loss": result.test_loss, "train_eval_s": result.train_eval_s,
        "data_to_device_s": result.data_s, "warmup_s": result.compile_s, "steps": result.steps,
    }


def summarize(rows: list[dict]) -> dict:
    def stats(key: str) -> dict:
        values = [r[key] for r in rows]
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values)}

    summary = {key: stats(key) for key in ("tta_acc", "acc", "train_eval_s", "data_to_device_s", "warmup_s")}
    summary["runs"] = len(rows)
    summary["meets_accuracy"] = summary["tta_acc"]["mean"] >= TARGET_ACC
    summary["meets_time"] = summary["train_eval_s"]["mean"] <= TARGET_S
    return summary


COLUMNS = (("TTA acc", 8), ("plain acc", 9), ("train+eval s", 12), ("to device s", 11), ("warm-up s", 9))


def line(epochs, seed, tta_acc, acc, train_eval_s, to_device_s, warmup_s) -> str:
    return (f"{epochs:>6} {seed:>4} {tta_acc:>8.2%} {acc:>9.2%} {train_eval_s:>12.3f} "
            f"{to_device_s:>11.3f} {warmup_s:>9.1f}")


def print_table(rows: list[dict], summaries: dict[int, dict], load_s: float, device_name: str) -> None:
    print()
    print(f"cifar10-speedrun on {device_name}")
    header = f"{'epochs':>6} {'seed':>4} " + " ".join(f"{name:>{width}}" for name, width in COLUMNS)
    print(header)
    print("-" * len(header))
    keys = ("tta_acc", "acc", "train_eval_s", "data_to_device_s", "warmup_s")
    for r in rows:
        print(line(r["epochs"], r["seed"], *(r[key] for key in keys)))
    print("-" * len(header))
    for epochs, s in summaries.items():
        verdict = "meets" if s["meets_accuracy"] and s["meets_time"] else "misses"
        print(line(epochs, "mean", *(s[key]["mean"] for key in keys)))
        print(line("", "std", *(s[key]["std"] for key in keys))
              + f"   ({verdict} >= {TARGET_ACC:.1%} in <= {TARGET_S:g} s, {s['runs']} seeds)")
    print(f"excluded: data loading (decode or cache read, once) {load_s:.1f} s; "
          "to-device and warm-up per seed as above")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hyperparameters = overrides(args.set)
    device, notices = pick_device(args.device)
    for notice in notices:
        print(notice)
    started = time.perf_counter()
    data = load_dataset(args.data, data_dir=Path(args.data_dir).expanduser(), log=lambda m: print(f"  {m}"))
    data = subset(data, args.train_subset, args.test_subset)
    load_s = time.perf_counter() - started
    device_name = describe_device(device)
    print(f"{len(data.train)} train / {len(data.test)} test images, loaded in {load_s:.1f} s; {device_name}")

    rows = []
    for epochs in args.epochs:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            config = make_config(args, epochs, seed)
            print(f"epochs {epochs}, seed {seed}:", flush=True)
            result = fit_speedrun(config, printer(args.quiet), TrainControl(), data, device, None,
                                  hyperparameters=hyperparameters, compile_mode=args.compile_mode)
            rows.append(row(result, seed, epochs))
            print(f"  -> {result.tta_acc:.2%} TTA ({result.acc:.2%} plain) in {result.train_eval_s:.3f} s "
                  f"(to device {result.data_s:.2f} s, warm-up {result.compile_s:.1f} s)", flush=True)
            del result
            if device.type == "cuda":
                torch.cuda.empty_cache()

    summaries = {epochs: summarize([r for r in rows if r["epochs"] == epochs]) for epochs in args.epochs}
    print_table(rows, summaries, load_s, device_name)
    if args.out is not None:
        report = {
            "data": args.data, "train_size": len(data.train), "test_size": len(data.test),
            "device": device_name, "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "python": platform.python_version(), "precision": args.precision, "compile": not args.no_compile,
            "compile_mode": args.compile_mode, "hyperparameters": {**HYPERPARAMETERS, **hyperparameters},
            "data_load_s": load_s, "runs": rows,
            "summary": {str(epochs): s for epochs, s in summaries.items()},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=list) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except WorkbenchError as error:
        raise SystemExit(f"speedrun_gpu: {error}") from None
