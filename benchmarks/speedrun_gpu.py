"""Measure the cifar10-speedrun recipe: accuracy and time per seed, one table, and a JSON file.

On a GPU machine, from the repository root (no network needed):

    mkdir -p ~/data && tar xzf ../shared/data/cifar10-jpg.tar.gz -C ~/data
    python benchmarks/speedrun_gpu.py ~/data/cifar10 --seeds 5 --out speedrun.json

Timed per seed: whitening init + training loop + final test-time-augmented evaluation
(on the device's clock), through the one engine's fit() with the speedrun recipe. Excluded and
reported apart: decoding/caching the data (once), and the compile + cuDNN warm-up (large on the
first seed, small after it, since later seeds reuse the compiled graphs); excluded too: moving
the data to the device, checkpoint and image files. `--epochs 10 12` measures several
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
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from workbench.core.config import RunConfig  # noqa: E402
from workbench.core.data.load import load_dataset  # noqa: E402
from workbench.core.data.types import Dataset, Split  # noqa: E402
from workbench.core.errors import WorkbenchError  # noqa: E402
from workbench.core.events import EpochMetrics, Failed, Finished, Notice  # noqa: E402
from workbench.core.presets import preset_config  # noqa: E402
from workbench.core.speedrun.recipe import HYPERPARAMETERS, SpeedrunRecipe  # noqa: E402
from workbench.core.training.device import describe_device, pick_device  # noqa: E402
from workbench.core.training.engine import fit  # noqa: E402

TARGET_ACC = 0.94
TARGET_S = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="CIFAR-10 folder in ImageFolder layout (train/, test/), or a set name")
    parser.add_argument("--data-dir", default=str(Path.home() / ".cache" / "workbench-bench"),
                        help="where the decoded uint8 cache is kept (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default: 5)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, nargs="+", default=[preset_config("cifar10-speedrun").epochs],
                        help="epoch count(s) to measure (default: %(default)s)")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="cuda", choices=("auto", "cuda", "cpu", "mps"))
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--batch-size", type=int, default=0, help="images per step (default: the preset's)")
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


def make_config(args: argparse.Namespace, epochs: int, seed: int, runs_dir: str) -> RunConfig:
    changes = dict(dataset=args.data, data_dir=args.data_dir, epochs=epochs, seed=seed, runs_dir=runs_dir,
                   precision=args.precision, device=args.device, compile=not args.no_compile)
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    return preset_config("cifar10-speedrun").replace(**changes)


class Collector:
    """Prints progress and keeps what the table needs: the last epoch and how the run ended."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last_epoch: EpochMetrics | None = None
        self.finished: Finished | None = None
        self.failed: Failed | None = None

    def __call__(self, event) -> None:
        if isinstance(event, Notice) and not event.message.startswith("speedrun recipe"):
            print(f"    {event.message}", flush=True)
        elif isinstance(event, EpochMetrics):
            self.last_epoch = event
            if not self.quiet:
                test = f"  test {event.test_acc:.2%}" if event.test_acc is not None else ""
                print(f"    epoch {event.epoch:2d}/{event.epochs}  train loss {event.train_loss:.3f}  "
                      f"train acc {event.train_acc:.2%}{test}  {event.epoch_s:.2f} s", flush=True)
        elif isinstance(event, Finished):
            self.finished = event
        elif isinstance(event, Failed):
            self.failed = event


def row(collected: Collector, seed: int, epochs: int) -> dict:
    finished, last = collected.finished, collected.last_epoch
    return {
        "epochs": epochs, "seed": seed, "tta_acc": finished.final_test_acc,
        "acc": last.extra.get("test_acc_one_view", last.test_acc), "test_loss": last.test_loss,
        "train_eval_s": finished.train_s, "warmup_s": finished.warmup_s, "steps": finished.steps_done,
    }


def summarize(rows: list[dict]) -> dict:
    def stats(key: str) -> dict:
        values = [r[key] for r in rows]
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values)}

    summary = {key: stats(key) for key in ("tta_acc", "acc", "train_eval_s", "warmup_s")}
    summary["runs"] = len(rows)
    summary["meets_accuracy"] = summary["tta_acc"]["mean"] >= TARGET_ACC
    summary["meets_time"] = summary["train_eval_s"]["mean"] <= TARGET_S
    return summary


COLUMNS = (("TTA acc", 8), ("1-view acc", 10), ("train+eval s", 12), ("warm-up s", 9))


def line(epochs, seed, tta_acc, acc, train_eval_s, warmup_s) -> str:
    return f"{epochs:>6} {seed:>4} {tta_acc:>8.2%} {acc:>10.2%} {train_eval_s:>12.3f} {warmup_s:>9.1f}"


def print_table(rows: list[dict], summaries: dict[int, dict], load_s: float, device_name: str) -> None:
    print()
    print(f"cifar10-speedrun on {device_name}")
    header = f"{'epochs':>6} {'seed':>4} " + " ".join(f"{name:>{width}}" for name, width in COLUMNS)
    print(header)
    print("-" * len(header))
    keys = ("tta_acc", "acc", "train_eval_s", "warmup_s")
    for r in rows:
        print(line(r["epochs"], r["seed"], *(r[key] for key in keys)))
    print("-" * len(header))
    for epochs, s in summaries.items():
        verdict = "meets" if s["meets_accuracy"] and s["meets_time"] else "misses"
        print(line(epochs, "mean", *(s[key]["mean"] for key in keys)))
        print(line("", "std", *(s[key]["std"] for key in keys))
              + f"   ({verdict} >= {TARGET_ACC:.1%} in <= {TARGET_S:g} s, {s['runs']} seeds)")
    print(f"excluded: data loading (decode or cache read, once) {load_s:.1f} s, moving it to the device, "
          "the compile warm-up per seed (as above), checkpoint and image files")


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
    with tempfile.TemporaryDirectory(prefix="speedrun-runs-") as runs_dir:
        for epochs in args.epochs:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                config = make_config(args, epochs, seed, runs_dir)
                print(f"epochs {epochs}, seed {seed}:", flush=True)
                collected = Collector(args.quiet)
                fit(config, collected, data=data, recipe=SpeedrunRecipe(hyperparameters))
                if collected.failed is not None or collected.finished is None:
                    raise SystemExit(f"the run failed: {collected.failed.reason if collected.failed else 'no result'}")
                rows.append(row(collected, seed, epochs))
                r = rows[-1]
                print(f"  -> {r['tta_acc']:.2%} TTA ({r['acc']:.2%} one view) in {r['train_eval_s']:.3f} s "
                      f"(warm-up {r['warmup_s']:.1f} s)", flush=True)
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
            "hyperparameters": SpeedrunRecipe(hyperparameters).record()["hyperparameters"],
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
