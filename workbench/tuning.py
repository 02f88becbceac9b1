"""`workbench lr-find` and `workbench batch-find`: the tuning tools, headless; each returns an exit code."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from workbench.core import exit_codes
from workbench.core.errors import WorkbenchError
from workbench.core.shown import shown

EXIT_OK = exit_codes.OK
TABLE_ROWS = 12


def add_lr_find_options(parser: argparse.ArgumentParser) -> None:
    from workbench.core.training.lr_finder import DIVERGE, END_LR, SMOOTHING, START_LR, STEPS

    group = parser.add_argument_group("the range test")
    group.add_argument("--start-lr", type=float, default=START_LR, help=f"(default: {START_LR:g})")
    group.add_argument("--end-lr", type=float, default=END_LR, help=f"(default: {END_LR:g})")
    group.add_argument("--steps", type=int, default=STEPS, help=f"steps from start to end (default: {STEPS})")
    group.add_argument("--smoothing", type=float, default=SMOOTHING,
                       help=f"weight of the past in the loss's moving average (default: {SMOOTHING})")
    group.add_argument("--diverge", type=float, default=DIVERGE,
                       help=f"stop when the smoothed loss passes this many times its minimum (default: {DIVERGE:g})")
    group.add_argument("--out", metavar="FOLDER", help="where lr_find.png and lr_find.json go "
                       "(default: RUNS_DIR/lr-find/<time>-<arch>)")
    group.add_argument("--json", action="store_true", help="print the result as JSON")


def run_lr_find(args: argparse.Namespace) -> int:
    from workbench.core.atomic import check_folder_writable, disk_error, write_json_atomic
    from workbench.core.events import Notice
    from workbench.core.inspection.curves import save_lr_curve
    from workbench.core.training.control import TrainControl
    from workbench.core.training.lr_finder import check_range, lr_find
    from workbench.core.training.preparation import prepare_trial
    from workbench.options import config_from_args

    config = config_from_args(args)
    check_range(args.start_lr, args.end_lr, args.steps, args.smoothing, args.diverge)
    out = Path(args.out).expanduser() if args.out else (
        Path(config.runs_dir).expanduser() / "lr-find" / f"{datetime.now():%Y%m%d-%H%M%S}-{config.arch}")
    check_folder_writable(out, "--out" if args.out else "")  # before the sweep, not after it
    answer = getattr(args, "answer", None)  # --json-lines: a parent reads one row per step, then the result
    quiet = args.json or answer is not None

    def emit(event) -> None:
        if isinstance(event, Notice) and not quiet:
            print(("warning: " if event.level == "warning" else "") + shown(event.message), flush=True)

    def on_step(step: int, lr: float, loss: float, smoothed: float) -> None:
        if answer is not None:
            answer.progress(step=step, lr=lr, loss=loss, smoothed=smoothed)

    trial = prepare_trial(config, emit, TrainControl())
    built = trial.built
    curve = lr_find(config, built.model, built.train, trial.recipe, trial.device, start_lr=args.start_lr,
                    end_lr=args.end_lr, steps=args.steps, smoothing=args.smoothing, diverge=args.diverge,
                    amp_dtype=trial.amp_dtype, on_step=on_step)
    title = f"LR finder: {config.arch} on {Path(config.dataset).name or config.dataset}, batch {built.batch_size}"
    try:
        save_lr_curve(out / "lr_find.png", curve.lrs, curve.losses, curve.smoothed, curve.suggestion,
                      curve.steepest, title)
        write_json_atomic(out / "lr_find.json", {**curve.to_dict(), "dataset": config.dataset})
    except OSError as error:  # the disk filled during the sweep, say
        problem = disk_error(error, out / "lr_find.png")
        raise (problem if not isinstance(problem, OSError) else
               WorkbenchError(f"cannot write in {shown(out)} ({error.strerror or error})")) from None
    if answer is not None:
        answer.result(**curve.to_dict(), png=str(out / "lr_find.png"))
        return EXIT_OK
    if quiet:
        print(json.dumps({"result": {**curve.to_dict(), "png": str(out / "lr_find.png")}}), flush=True)
        return EXIT_OK
    print(f"{'step':>5} {'lr':>10} {'loss':>9} {'smoothed':>9}")
    table_rows = sorted({round(i * (len(curve.lrs) - 1) / (TABLE_ROWS - 1)) for i in range(TABLE_ROWS)}) if curve.lrs else []
    for index in table_rows:
        print(f"{index + 1:>5} {curve.lrs[index]:>10.3g} {curve.losses[index]:>9.4f} {curve.smoothed[index]:>9.4f}")
    print(f"ended: {curve.ended}")
    if curve.suggestion is None:
        print(f"no suggestion: {curve.rule}")
    else:
        print(f"suggested lr {curve.suggestion:.3g}: {curve.rule}")
        if curve.steepest is not None:
            print(f"  bolder: {curve.steepest:.3g}, the steepest descent of the smoothed loss (can sit at the edge "
                  "of divergence: the smoothed curve lags the raw one)")
    print(shown(f"wrote {out / 'lr_find.png'} and {out / 'lr_find.json'}"))
    return EXIT_OK


def add_batch_find_options(parser: argparse.ArgumentParser) -> None:
    from workbench.core.training.batch_finder import LIMIT, START

    parser.add_argument("--start", type=int, default=START, help=f"the first batch size tried (default: {START})")
    parser.add_argument("--limit", type=int, default=LIMIT, help=f"never try above this (default: {LIMIT})")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_batch_find(args: argparse.Namespace) -> int:
    from workbench.core.training.batch_finder import find_batch_size
    from workbench.options import config_from_args

    config = config_from_args(args)
    if args.start < 1 or args.limit < args.start:
        raise WorkbenchError("--start must be 1 or more and --limit at least --start")

    answer = getattr(args, "answer", None)  # --json-lines: for a parent process

    def on_trial(size: int, fitted: bool) -> None:
        if answer is not None:
            answer.progress(batch_size=size, fits=fitted)
        elif not args.json:
            print(f"batch {size:>6}: {'fits' if fitted else 'out of memory'}", flush=True)

    search = find_batch_size(config, start=args.start, limit=args.limit, on_trial=on_trial)
    if answer is not None:
        answer.result(largest=search.largest, tried=search.tried, reason=search.reason)
    elif args.json:
        print(json.dumps({"largest": search.largest, "tried": search.tried, "reason": search.reason}))
    elif search.largest is None:
        print(f"even batch {args.start} does not fit: {shown(search.reason)}; try a smaller model or image size", file=sys.stderr)
    else:
        print(f"largest batch that fits: {search.largest} ({shown(search.reason)})")
    return EXIT_OK if search.largest is not None else 1
