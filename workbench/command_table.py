"""Every `workbench` subcommand in one table: its name, its line in `workbench --help`, the
options it takes and the function that runs it. The table names functions as "module:name"
and imports them only when that command is used, so `--help` and the app start fast.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable

from workbench.core.config import DEVICES
from workbench.options import add_setting_option, add_train_options


@dataclass(frozen=True)
class Command:
    name: str
    summary: str  # its line in `workbench --help`
    options: str  # "module:function(parser)" adding its options
    run: str  # "module:function(args) -> exit code"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        _load(self.options)(parser)

    def runner(self) -> Callable[[argparse.Namespace], int]:
        return _load(self.run)


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


HERE = "workbench.command_table"
COMMANDS = (
    Command("train", "train headless (progress bar on a terminal, one line per epoch otherwise)",
            f"{HERE}:train_options", "workbench.commands:run_train"),
    Command("models", "list architectures with parameter counts for a data set",
            f"{HERE}:models_options", "workbench.commands:run_models"),
    Command("runs", "list runs in the runs folder", f"{HERE}:runs_options", "workbench.commands:run_runs"),
    Command("runs export", "a run's metrics as CSV (--csv) or TensorBoard event files (--tensorboard DIR)",
            f"{HERE}:runs_export_options", "workbench.commands:run_runs_export"),
    Command("export", "write a run's model as safetensors + model.json (and pt2/onnx)",
            f"{HERE}:export_options", "workbench.commands:run_export"),
    Command("predict", "classify image files with an exported model",
            f"{HERE}:predict_options", "workbench.commands:run_predict"),
    Command("bench", "compare the engine with a plain PyTorch loop", f"{HERE}:bench_options",
            "workbench.commands:run_bench"),
    Command("lr-find", "the learning-rate range test: a curve, a suggestion and the rule behind it",
            f"{HERE}:lr_find_options", "workbench.commands:run_lr_find"),
    Command("batch-find", "the largest batch that fits in GPU memory", f"{HERE}:batch_find_options",
            "workbench.commands:run_batch_find"),
    Command("reproduce", "seed-table: the seed tutorials' six models with their recipe, beside the seed's figures",
            f"{HERE}:reproduce_options", "workbench.commands:run_reproduce"),
    Command("compare", "runs side by side: the settings that differ, best and final accuracy, time",
            "workbench.experiment_commands:compare_options", "workbench.experiment_commands:run_compare"),
    Command("sweep", "queue a grid of runs from comma lists on train flags",
            "workbench.experiment_commands:sweep_options", "workbench.experiment_commands:run_sweep"),
    Command("sweep join", "train the trials of a search study (sweep --search tpe), here or on any machine",
            "workbench.search_commands:join_options", "workbench.search_commands:run_join"),
    Command("queue", "list, add to and work through (queue run [--parallel N]) the job queue",
            "workbench.queue_commands:queue_options", "workbench.queue_commands:run_queue"),
    Command("watch", "the live dashboard of a run another process trains",
            "workbench.experiment_commands:watch_options", "workbench.experiment_commands:run_watch"),
)
BY_NAME = {command.name: command for command in COMMANDS}


def epilog() -> str:
    width = max(len(command.name) for command in COMMANDS) + 2
    lines = [f"  {command.name:<{width}}{command.summary}" for command in COMMANDS]
    return "commands:\n" + "\n".join(lines) + "\nrun `workbench COMMAND --help` for a command's options"


# ---- each command's options ------------------------------------------------------------------


def train_options(parser: argparse.ArgumentParser) -> None:
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
    trial = parser.add_argument_group("a search's trial (`workbench sweep join` starts these)")
    trial.add_argument("--study", metavar="NAME", help="train trial --trial of this search study, whose pruner "
                                                       "may stop it after an epoch")
    trial.add_argument("--trial", type=int, metavar="N", help="the trial's number in --study")
    trial.add_argument("--storage", metavar="URL", help="the study's storage: an RDB URL or a journal file "
                                                        "(default: WORKBENCH_SEARCH_STORAGE, set by sweep join)")


def models_options(parser: argparse.ArgumentParser) -> None:
    parser.description = "List architectures with parameter counts for a data set's shape."
    add_setting_option(parser, "dataset")
    add_setting_option(parser, "image_size")
    parser.add_argument("--arch", help="also show this architecture's layers, output shapes and parameters "
                                       "(a name, or your own network as path/to/file.py:factory)")


def runs_options(parser: argparse.ArgumentParser) -> None:
    parser.description = "List past runs, newest first."
    add_setting_option(parser, "runs_dir")
    parser.add_argument("--json", action="store_true", help="every run as JSON (full names and paths)")
    parser.add_argument("--plain", action="store_true",
                        help="one tab-separated line per run, names never cut (the default when piped)")


def runs_export_options(parser: argparse.ArgumentParser) -> None:
    parser.description = ("A run's metrics in the formats other tools read: CSV, one row per epoch (or per step "
                          "sample with --steps), and TensorBoard event files (pip install -e \".[tensorboard]\").")
    parser.add_argument("run", help="run folder (or its name inside --runs-dir)")
    add_setting_option(parser, "runs_dir")
    parser.add_argument("--csv", metavar="FILE", help="write the CSV here (- or no --tensorboard: stdout)")
    parser.add_argument("--steps", action="store_true", help="CSV of the step samples instead of the epochs")
    parser.add_argument("--tensorboard", metavar="DIR",
                        help="write TensorBoard event files to DIR/RUN_NAME; then `tensorboard --logdir DIR`")


def export_options(parser: argparse.ArgumentParser) -> None:
    parser.description = "Export a run's model (pickle-free safetensors + model.json; pt2 and onnx on request)."
    parser.add_argument("run", help="run folder (or its name inside --runs-dir)")
    add_setting_option(parser, "runs_dir")
    parser.add_argument("--format", default="safetensors",
                        help="comma list of safetensors, pt2, onnx (default: safetensors)")
    parser.add_argument("--verify", action="store_true",
                        help="rerun held-out images through every format and compare logits")
    parser.add_argument("--checkpoint", default="best", metavar="best|last|epoch-N",
                        help="best: the epoch with the highest validation accuracy (the last one when "
                             "the run has no validation split); last: the last epoch; epoch-N: one of "
                             "the epochs kept with --keep-best (default: best)")
    parser.add_argument("--json", action="store_true", help="report what was written and verified as JSON")


def predict_options(parser: argparse.ArgumentParser) -> None:
    parser.description = "Classify images with an exported model (no pickle is loaded)."
    parser.add_argument("export_dir", help="a run's export/ folder, the run folder, or a bundle file "
                                           "(model.pt2 or model.onnx runs that format)")
    parser.add_argument("images", nargs="+", help="image files, folders (every image inside) or quoted globs "
                                                  "('photos/**/*.jpg'); an unreadable file is skipped with a line")
    parser.add_argument("--format", choices=("safetensors", "pt2", "onnx"),
                        help="the bundle's file to run: safetensors (the network, default), pt2 (torch.export) or "
                             "onnx (onnxruntime); pt2 and onnx need no --trust-code")
    parser.add_argument("--csv", metavar="FILE", help="also write one row per image and class (- for stdout only)")
    parser.add_argument("--json", metavar="FILE", help="also write the predictions as JSON (- for stdout only)")
    parser.add_argument("--top", type=int, default=5, help="classes to show per image (default: 5)")
    parser.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                        help="N stochastic passes with dropout on: mean and spread per class")
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--trust-code", action="store_true",
                        help="a bundle of a network from your own Python file holds that file: run it "
                             "(only for bundles whose maker you trust)")


def lr_find_options(parser: argparse.ArgumentParser) -> None:
    from workbench.tuning import add_lr_find_options

    parser.description = ("Sweep the learning rate exponentially on a throwaway copy of the run's model "
                          "and suggest one (the rule is named). Takes the train options.")
    add_train_options(parser)
    add_lr_find_options(parser)


def batch_find_options(parser: argparse.ArgumentParser) -> None:
    from workbench.tuning import add_batch_find_options

    parser.description = "Find the largest batch that fits in GPU memory for a model and image size (doubling)."
    add_train_options(parser)
    add_batch_find_options(parser)


def reproduce_options(parser: argparse.ArgumentParser) -> None:
    from workbench.reproduce import add_reproduce_options

    parser.description = ("Train the seed tutorials' architectures with the seed's recipe (Adam 0.003, batch "
                          "32, 4 epochs, constant lr, no augmentation), under the seed's conditions and "
                          "normalised, and print them beside the seed's figures.")
    add_reproduce_options(parser)


def bench_options(parser: argparse.ArgumentParser) -> None:
    from workbench.bench.settings import add_bench_options

    parser.description = "Measure the workbench engine against a plain PyTorch loop in one process."
    add_bench_options(parser)
