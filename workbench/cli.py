"""The `workbench` command line: parse arguments, build a RunConfig, run a command or the app.

`workbench` alone (optionally with train options) opens the app; subcommands run headless.
Every user mistake ends in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from workbench.core.config import (
    AUGMENTATIONS,
    DATASET_NAMES,
    DEVICES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    RunConfig,
)
from workbench.core.errors import WorkbenchError

EXIT_BAD_INPUT = 2
COMMANDS = ("train", "models", "runs", "export", "predict", "bench")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    add("--epochs", type=int, help=f"(default: {d.epochs})")
    add("--batch-size", type=int, help=f"(default: {d.batch_size})")
    add("--optimizer", choices=OPTIMIZERS, help=f"(default: {d.optimizer})")
    add("--lr", type=float, help=f"peak learning rate (default: {d.lr})")
    add("--momentum", type=float, help=f"SGD momentum or Adam beta1 (default: {d.momentum})")
    add("--weight-decay", type=float, help=f"(default: {d.weight_decay})")
    add("--schedule", choices=SCHEDULES, help=f"learning-rate schedule (default: {d.schedule})")
    add("--warmup-epochs", type=float, help=f"linear warm-up length (default: {d.warmup_epochs})")
    add("--label-smoothing", type=float, help=f"(default: {d.label_smoothing})")
    add("--augment", help=f"comma list of {', '.join(AUGMENTATIONS)}, or none (default: {','.join(d.augment)})")
    add("--image-size", type=int, help="pixels per side (default: the data set's own; 32 for folders)")
    add("--precision", choices=PRECISIONS, help=f"(default: {d.precision})")
    add("--device", choices=DEVICES, help=f"auto = cuda, then mps, then cpu (default: {d.device})")
    add("--seed", type=int, help=f"(default: {d.seed})")
    add("--runs-dir", help=f"where run folders go (default: {d.runs_dir})")
    add("--val-fraction", type=float, help=f"test share for a folder without test/ or val/ (default: {d.val_fraction})")
    add("--stream-over-mb", type=float,
        help="stream folders whose decoded size passes this from their files (default: a quarter of RAM)")
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


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="workbench",
        description="Train image classifiers from the keyboard. With no command, opens the app; "
        "training options given here fill in its form, so `s` starts at once.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        "  train     train headless (progress bar on a terminal, one line per epoch otherwise)\n"
        "  models    list architectures with parameter counts for a data set\n"
        "  runs      list runs in the runs folder\n"
        "  export    write a run's model as safetensors + model.json (and pt2/onnx)\n"
        "  predict   classify image files with an exported model\n"
        "  bench     compare the engine with a plain PyTorch loop\n"
        "run `workbench COMMAND --help` for a command's options",
    )
    add_train_options(parser)
    return parser


def build_command_parser(command: str) -> OneLineParser:
    parser = OneLineParser(prog=f"workbench {command}")
    if command == "train":
        parser.description = "Train headless with the same engine the app uses."
        add_train_options(parser)
        parser.add_argument("--resume", metavar="RUN", help="continue a stopped, failed or finished run (give more --epochs)")
    elif command == "models":
        parser.description = "List architectures with parameter counts for a data set's shape."
        parser.add_argument("--dataset", default="cifar10", help="data set name or folder (default: cifar10)")
        parser.add_argument("--image-size", type=int, default=0, help="(default: the data set's own)")
    elif command == "runs":
        parser.description = "List past runs, newest first."
        parser.add_argument("--runs-dir", default="runs", help="(default: runs)")
    elif command == "export":
        parser.description = "Export a run's best checkpoint."
        parser.add_argument("run", help="run folder (or its name inside --runs-dir)")
        parser.add_argument("--runs-dir", default="runs")
        parser.add_argument("--format", default="safetensors",
                            help="comma list of safetensors, pt2, onnx (default: safetensors)")
        parser.add_argument("--verify", action="store_true",
                            help="rerun held-out images through every format and compare logits")
        parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    elif command == "predict":
        parser.description = "Classify images with an exported model (no pickle is loaded)."
        parser.add_argument("export_dir", help="a run's export/ folder (or the run folder)")
        parser.add_argument("images", nargs="+", help="image files")
        parser.add_argument("--top", type=int, default=5, help="classes to show per image (default: 5)")
        parser.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                            help="N stochastic passes with dropout on: mean and spread per class")
        parser.add_argument("--device", choices=DEVICES, default="cpu")
    elif command == "bench":
        from workbench.core.bench import add_bench_options

        parser.description = "Measure the workbench engine against a plain PyTorch loop in one process."
        add_bench_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            args = build_command_parser(argv[0]).parse_args(argv[1:])
            return _dispatch(argv[0], args)
        args = build_parser().parse_args(argv)
        return _open_app(args)
    except WorkbenchError as error:
        print(f"workbench: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


def _dispatch(command: str, args: argparse.Namespace) -> int:
    from workbench import commands

    return getattr(commands, f"run_{command}")(args)


def _open_app(args: argparse.Namespace) -> int:
    given = any(getattr(args, f, None) is not None for f in RunConfig.__dataclass_fields__)
    initial = config_from_args(args) if (given or args.config or args.preset) else None
    from workbench.ui.app import run_app

    return run_app(initial)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
