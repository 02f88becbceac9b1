"""The `workbench` command line: parse arguments, build a RunConfig, run a command or the app.

`workbench` alone (optionally with train options) opens the app; subcommands run headless.
Every user mistake ends in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from workbench.core.config import DEVICES, RunConfig
from workbench.core import exit_codes
from workbench.core.errors import WorkbenchError
from workbench.options import add_train_options, config_from_args

EXIT_BAD_INPUT = exit_codes.BAD_INPUT
COMMANDS = ("train", "models", "runs", "export", "predict", "bench", "lr-find", "batch-find", "reproduce",
            "compare", "sweep", "queue", "watch")
EXPERIMENT_COMMANDS = ("compare", "sweep", "queue", "watch")  # in workbench/experiments.py


class UsageError(WorkbenchError):
    """A mistake in the command line itself, said the way argparse words it."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        flag = message.removeprefix("argument ").split(":", 1)[0].split("/")[0] if message.startswith("argument --") else ""
        field = flag.lstrip("-").replace("-", "_") or None  # a parent reading JSON lines learns the setting at fault
        raise UsageError(f"{message} (see {self.prog} --help)", field=field)


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
        "  lr-find   the learning-rate range test: a curve, a suggestion and the rule behind it\n"
        "  batch-find  the largest batch that fits in GPU memory\n"
        "  reproduce seed-table  the seed tutorials' six models with their recipe, beside the seed's figures\n"
        "  compare   runs side by side: the settings that differ, best and final accuracy, time\n"
        "  sweep     queue a grid of runs from comma lists on train flags\n"
        "  queue     list, add to and work through (queue run [--parallel N]) the job queue\n"
        "  watch     the live dashboard of a run another process trains\n"
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
        parser.add_argument("--notify", metavar="bell,desktop",
                            help="when the run finishes, stops or fails: the terminal bell and/or a desktop notification")
        parser.add_argument("--gpus", type=int, metavar="N",
                            help="train on N CUDA GPUs of this machine, one process each, launched through "
                                 "torch.distributed.run (as torchrun does); --batch-size stays the global batch")
        parser.add_argument("--run-id", default="", metavar="ID",
                            help="an id to record in the run's run.json (a queue or a launcher finds the run by it)")
    elif command == "models":
        parser.description = "List architectures with parameter counts for a data set's shape."
        parser.add_argument("--dataset", default="cifar10", help="data set name or folder (default: cifar10)")
        parser.add_argument("--image-size", type=int, default=0, help="(default: the data set's own)")
        parser.add_argument("--arch", help="also show this architecture's layers, output shapes and parameters "
                                           "(a name, or your own network as path/to/file.py:factory)")
    elif command == "runs":
        parser.description = "List past runs, newest first."
        parser.add_argument("--runs-dir", default="runs", help="(default: runs)")
        parser.add_argument("--json", action="store_true", help="every run as JSON (full names and paths)")
        parser.add_argument("--plain", action="store_true",
                            help="one tab-separated line per run, names never cut (the default when piped)")
    elif command == "export":
        parser.description = "Export a run's model (pickle-free safetensors + model.json; pt2 and onnx on request)."
        parser.add_argument("run", help="run folder (or its name inside --runs-dir)")
        parser.add_argument("--runs-dir", default="runs")
        parser.add_argument("--format", default="safetensors",
                            help="comma list of safetensors, pt2, onnx (default: safetensors)")
        parser.add_argument("--verify", action="store_true",
                            help="rerun held-out images through every format and compare logits")
        parser.add_argument("--checkpoint", default="best", metavar="best|last|epoch-N",
                            help="best: the epoch with the highest validation accuracy (the last one when "
                                 "the run has no validation split); last: the last epoch; epoch-N: one of "
                                 "the epochs kept with --keep-best (default: best)")
        parser.add_argument("--json", action="store_true", help="report what was written and verified as JSON")
    elif command == "predict":
        parser.description = "Classify images with an exported model (no pickle is loaded)."
        parser.add_argument("export_dir", help="a run's export/ folder (or the run folder)")
        parser.add_argument("images", nargs="+", help="image files")
        parser.add_argument("--top", type=int, default=5, help="classes to show per image (default: 5)")
        parser.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                            help="N stochastic passes with dropout on: mean and spread per class")
        parser.add_argument("--device", choices=DEVICES, default="cpu")
        parser.add_argument("--trust-code", action="store_true",
                            help="a bundle of a network from your own Python file holds that file: run it "
                                 "(only for bundles whose maker you trust)")
    elif command == "lr-find":
        from workbench.tuning import add_lr_find_options

        parser.description = ("Sweep the learning rate exponentially on a throwaway copy of the run's model "
                              "and suggest one (the rule is named). Takes the train options.")
        add_train_options(parser)
        add_lr_find_options(parser)
    elif command == "batch-find":
        from workbench.tuning import add_batch_find_options

        parser.description = "Find the largest batch that fits in GPU memory for a model and image size (doubling)."
        add_train_options(parser)
        add_batch_find_options(parser)
    elif command == "reproduce":
        from workbench.reproduce import add_reproduce_options

        parser.description = ("Train the seed tutorials' architectures with the seed's recipe (Adam 0.003, batch "
                              "32, 4 epochs, constant lr, no augmentation), under the seed's conditions and "
                              "normalised, and print them beside the seed's figures.")
        add_reproduce_options(parser)
    elif command in EXPERIMENT_COMMANDS:
        from workbench.experiments import add_experiment_options

        add_experiment_options(command, parser)
    elif command == "bench":
        from workbench.bench.settings import add_bench_options

        parser.description = "Measure the workbench engine against a plain PyTorch loop in one process."
        add_bench_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from workbench.launch import ANSWER_FLAG, Answer, answering

    argv = list(sys.argv[1:] if argv is None else argv)
    answer = Answer() if answering(argv) else None  # started by a parent process: it reads JSON lines
    typed = argv[1:]  # as typed, for a command that hands them on (train --gpus)
    argv = [argument for argument in argv if argument != ANSWER_FLAG]
    try:
        if argv and argv[0] in COMMANDS:
            args = build_command_parser(argv[0]).parse_args(argv[1:])
            args.argv, args.answer = typed, answer
            return _dispatch(argv[0], args)
        args = build_parser().parse_args(argv)
        return _open_app(args)
    except WorkbenchError as error:
        print(f"workbench: error: {error}", file=sys.stderr)
        if answer is not None:
            answer.error(str(error), error.field)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return exit_codes.STOPPED


def _dispatch(command: str, args: argparse.Namespace) -> int:
    from workbench import commands, experiments

    module = experiments if command in EXPERIMENT_COMMANDS else commands
    return getattr(module, "run_" + command.replace("-", "_"))(args)


def _open_app(args: argparse.Namespace) -> int:
    given = any(getattr(args, f, None) is not None for f in RunConfig.__dataclass_fields__)
    initial = config_from_args(args) if (given or args.config or args.preset) else None
    from workbench.ui.app import run_app

    return run_app(initial)


def entry() -> None:
    """The `workbench` script and `python -m workbench`: main(), then leave even when someone's
    code (a network's factory) left threads running that would keep the process alive for ever."""
    import os
    import threading

    code = main()
    stray = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if stray:
        names = ", ".join(sorted({t.name for t in stray}))[:200]
        print(f"workbench: warning: {len(stray)} thread(s) still running ({names}), started by code that is not "
              "workbench's (a network's factory?); exiting without waiting for them", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
