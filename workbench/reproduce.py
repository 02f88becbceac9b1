"""`workbench reproduce seed-table`: the seed tutorials' six rows, trained with the seed's recipe.

Every row is two real runs through the one engine (in RUNS_DIR/seed-table/<time>/runs), so each
figure can be opened, inspected and exported like any run. The table is rewritten after every
run, so Ctrl-C keeps the rows already trained.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from workbench.core import exit_codes
from workbench.core.errors import WorkbenchError
from workbench.core.shown import shown
from workbench.core.wording import count as counted

EXIT_OK, EXIT_FAILED, EXIT_STOPPED, EXIT_TERMINATED = (exit_codes.OK, exit_codes.FAILED, exit_codes.STOPPED,
                                                        exit_codes.TERMINATED)
TABLES = ("seed-table",)


def add_reproduce_options(parser: argparse.ArgumentParser) -> None:
    from workbench.core.config import DEVICES
    from workbench.core.seed_table import SEED_ACCURACY

    parser.add_argument("table", choices=TABLES, help="seed-table: the seed tutorials' six architectures")
    parser.add_argument("--archs", default=",".join(SEED_ACCURACY),
                        help=f"comma list, a subset of {', '.join(SEED_ACCURACY)} (default: all six)")
    parser.add_argument("--dataset", default="cifar10", help="cifar10 (downloaded once) or a CIFAR-10 folder "
                        "in ImageFolder layout (default: cifar10)")
    parser.add_argument("--data-dir", help="where named data sets and decoded caches live")
    parser.add_argument("--runs-dir", default="runs", help="the table and its runs go to RUNS_DIR/seed-table/<time> "
                        "(default: runs)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="(default: auto)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="the seed trained 4; fewer only to try the command quickly (default: 4)")
    parser.add_argument("--image-size", type=int, default=0, help="(default: the data set's own)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown to FILE")
    parser.add_argument("--json", action="store_true", help="print the table as JSON (progress goes to stderr)")


def run_reproduce(args: argparse.Namespace) -> int:
    from workbench.core.atomic import disk_error, write_json_atomic, write_text_atomic
    from workbench.core.presets import preset_config
    from workbench.core.seed_table import CONDITIONS, NORMALIZE, SEED_ACCURACY, markdown, new_rows

    archs = [name.strip() for name in args.archs.split(",") if name.strip()]
    unknown = [name for name in archs if name not in SEED_ACCURACY]
    if unknown or not archs:
        raise WorkbenchError(f"--archs: {unknown[0] if unknown else args.archs!r} is not a seed architecture; "
                             f"choose from {', '.join(SEED_ACCURACY)}")
    base = preset_config("seed-recipe").replace(
        dataset=args.dataset, device=args.device, epochs=args.epochs, image_size=args.image_size,
        **({"data_dir": args.data_dir} if args.data_dir else {}))
    out = Path(args.runs_dir).expanduser() / "seed-table" / f"{datetime.now():%Y%m%d-%H%M%S}"
    base = base.replace(runs_dir=str(out / "runs"))
    for arch in archs:  # every row's settings checked before the first run starts
        base.replace(arch=arch)
    markdown_file = _writable_file(args.markdown) if args.markdown else None
    console = Console(stderr=args.json, soft_wrap=True)
    rows = new_rows(archs)
    heading = (f"Seed table: {args.dataset}, Adam 0.003, batch 32, {counted(args.epochs, 'epoch')}, constant lr, "
               "no augmentation, test accuracy of the last epoch")

    def save() -> None:
        text = markdown(rows, heading)
        for path, write in ((out / "table.json", lambda p: write_json_atomic(
                p, {"heading": heading, "rows": [row.to_dict() for row in rows]})),
                            (out / "table.md", lambda p: write_text_atomic(p, text)),
                            (markdown_file, lambda p: write_text_atomic(p, text))):
            if path is not None:
                try:
                    write(path)
                except OSError as error:
                    problem = disk_error(error, path)
                    if not isinstance(problem, WorkbenchError):
                        problem = WorkbenchError(f"cannot write {path} ({error.strerror or error})")
                    raise problem from None

    trainer = _Trainer(console, base)
    total = len(archs) * len(CONDITIONS)
    for condition in CONDITIONS:  # one data set load per condition, shared by its runs
        data = trainer.load(base.replace(normalize=NORMALIZE[condition]))
        if data is None:
            break
        for arch in archs:
            row = next(row for row in rows if row.arch == arch)
            trainer.count += 1
            console.print(f"[{trainer.count}/{total}] {arch}, {_describe(condition)}", highlight=False, markup=False)
            result = trainer.train(base.replace(arch=arch, normalize=NORMALIZE[condition]), data)
            if result is None:
                break
            setattr(row, condition, result.accuracy)
            row.params, row.seconds = result.params, row.seconds + result.seconds
            row.runs[condition] = str(result.run_dir)
            if condition == "faithful" and arch == "convbn":
                _seed_mistake(rows[-1], result, data)
            save()
        if trainer.ended:
            break
    save()
    if args.json:
        print(json.dumps({"heading": heading, "folder": str(out), "rows": [row.to_dict() for row in rows]}))
    else:
        _print_table(console, rows, heading)
        console.print(shown(f"table: {out / 'table.md'}" + (f" and {args.markdown}" if args.markdown else "")),
                      highlight=False, markup=False)
    return trainer.exit_code


def _writable_file(text: str) -> Path:
    """--markdown's file, refused now rather than after the first hour of training."""
    import os

    path = Path(text).expanduser()
    if path.is_dir():
        raise WorkbenchError(f"--markdown: {path} is a folder; give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the folder that exists: the rest is made when the table is written
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise WorkbenchError(f"--markdown: cannot write {path} ({folder} is not a writable folder)")
    return path


def _describe(condition: str) -> str:
    return ("the seed's conditions (pixels / 255, no normalisation)" if condition == "faithful"
            else "normalised with the training split's mean/std")


class _Result:
    def __init__(self, run_dir: Path, accuracy: float, params: int, seconds: float) -> None:
        self.run_dir, self.accuracy, self.params, self.seconds = run_dir, accuracy, params, seconds


class _Trainer:
    """Runs the table's trainings one after another; remembers whether one was stopped or failed."""

    def __init__(self, console: Console, base) -> None:
        from workbench.core.training.control import TrainControl

        self.console, self.base, self.count = console, base, 0
        self.control = TrainControl()
        self.exit_code = EXIT_OK
        self.ended = False

    def load(self, config):
        from workbench.core.errors import StopRequested
        from workbench.core.events import Notice
        from workbench.core.training.preparation import load_run_data

        def emit(event) -> None:
            if isinstance(event, Notice):
                self.console.print(("warning: " if event.level == "warning" else "") + shown(event.message),
                                   highlight=False, markup=False)
        try:
            return load_run_data(config, emit, self.control)
        except StopRequested:
            self._end(EXIT_STOPPED)
            return None

    def train(self, config, data) -> _Result | None:
        from workbench.core.events import Failed, Finished, RunStarted
        from workbench.headless import HeadlessReporter, fit_stopping_on_signals

        reporter = HeadlessReporter(self.console, interactive=self.console.is_terminal)
        seen: dict[type, object] = {}

        def events(event) -> None:
            reporter(event)
            if isinstance(event, (RunStarted, Finished, Failed)):
                seen[type(event)] = event

        fit_stopping_on_signals(config, reporter, self.console, self.control, events=events, data=data)
        finished = seen.get(Finished)
        if Failed in seen:
            raise WorkbenchError(f"{config.arch}: {seen[Failed].reason}")
        if finished is None or finished.status != "finished" or finished.final_test_acc is None:
            self._end(EXIT_TERMINATED if self.control.reason == "SIGTERM" else EXIT_STOPPED)
            return None
        return _Result(finished.run_dir, finished.final_test_acc, seen[RunStarted].params, finished.elapsed_s)

    def _end(self, code: int) -> None:
        self.exit_code, self.ended = code, True
        self.console.print("stopped: the table keeps the rows trained so far", highlight=False, markup=False)


def _seed_mistake(row, result: _Result, data) -> None:
    """The convbn run just trained, evaluated as the seed evaluated it: in train mode."""
    from workbench.core.checkpoint import load_checkpoint
    from workbench.core.models import with_weights
    from workbench.core.seed_table import class_sorted, shuffled, train_mode_accuracy

    state = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    test = data.test

    def accuracy(order) -> float:  # a fresh copy each time: train mode rewrites the running statistics
        model = with_weights("convbn", data.channels, data.num_classes, data.image_size, state["model"])
        return train_mode_accuracy(model, test.images, test.labels, data.mean, data.std, order)

    row.faithful = accuracy(class_sorted(test.labels))
    row.params, row.runs = result.params, {"faithful": str(result.run_dir)}
    row.note = (f"the faithful convbn run evaluated without model.eval(), in class-sorted test batches of 32 "
                f"(an unshuffled ImageFolder loader); in shuffled batches it scores "
                f"{accuracy(shuffled(len(test.labels))):.1%}, in eval mode {result.accuracy:.1%}")


def _print_table(console: Console, rows, heading: str) -> None:
    from workbench.core.seed_table import COLUMNS, cells

    table = Table(title=heading, caption="faithful: the seed's conditions (no normalisation); normalised: the "
                  "training split's mean/std; differences in points")
    for index, name in enumerate(COLUMNS):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*cells(row))
    if not console.is_terminal:  # a log file or pipe gets the whole table, not 80 cut columns
        console = Console(file=console.file, width=max(console.width, 120), soft_wrap=True)
    console.print(table)
    for row in rows:
        if row.note:
            console.print(f"{row.arch}: {row.note}", highlight=False, markup=False)
