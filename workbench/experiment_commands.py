"""The experiment subcommands: `compare`, `sweep`, `queue` and `watch`; each returns an exit code."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from workbench.core import exit_codes
from workbench.core.config import SETTINGS, RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.shown import shown
from workbench.core.wording import count as counted
from workbench.options import add_setting_option

EXIT_OK = exit_codes.OK


def compare_options(parser: argparse.ArgumentParser) -> None:
    parser.description = "Compare runs: the settings that differ, best and final test accuracy, time, speed."
    parser.add_argument("runs", nargs="*", help="run folders (or names inside --runs-dir)")
    add_setting_option(parser, "runs_dir")
    parser.add_argument("--sweep", metavar="ID", help="every run of this sweep (see `workbench queue`) or search study")
    parser.add_argument("--storage", metavar="URL", help="a search study's storage (default: RUNS_DIR/search.journal)")
    parser.add_argument("--sort", metavar="COLUMN", default="",
                        help="sort by a column: best-val, best-test, final-test, time, images/s, trial, or a "
                             "setting (a search study: best-val unless given)")
    parser.add_argument("--json", action="store_true", help="the comparison as JSON")


def sweep_options(parser: argparse.ArgumentParser) -> None:
    from workbench.options import add_train_options

    parser.description = ("Queue a grid of runs: comma lists on any train flag (--lr 0.1,0.01 --arch "
                          "linear,basic_cnn) multiply; alternatives of --augment are split on '/'. "
                          "Then `workbench queue run` trains them.")
    add_train_options(parser)
    _accept_lists(parser)
    parser.add_argument("--sweep-random", type=int, metavar="N",
                        help="queue N distinct points picked at random from the grid (seeded by --sweep-seed)")
    parser.add_argument("--sweep-seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--dry-run", action="store_true", help="list the points, queue nothing")
    from workbench.search_commands import add_search_options

    add_search_options(parser)


def watch_options(parser: argparse.ArgumentParser) -> None:
    parser.description = "The live dashboard of a run that another process trains (p pauses, x stops it)."
    parser.add_argument("run", help="run folder (or its name inside --runs-dir)")
    add_setting_option(parser, "runs_dir")


def _accept_lists(parser: argparse.ArgumentParser) -> None:
    """Every train flag of a setting that takes a value takes text, so a comma list is one value;
    RunConfig checks each value."""
    swept = {item.name for item in SETTINGS if item.kind != "bool"}
    for action in parser._actions:
        if action.dest in swept and action.option_strings:
            action.type, action.choices = None, None


# ---- compare ------------------------------------------------------------------------------


def run_compare(args: argparse.Namespace) -> int:
    from workbench.core.experiments.compare import compare
    from workbench.core.experiments.queue import JobQueue
    from workbench.core.runs import resolve_run

    paths = [resolve_run(run, args.runs_dir) for run in args.runs]
    sweeps: dict[Path, str] = {}
    study, sweep_jobs = None, 0
    if args.sweep:
        jobs = JobQueue(args.runs_dir).jobs(sweep=args.sweep)
        if not jobs:
            from workbench.search_commands import study_runs

            study = study_runs(args.sweep, args.storage, args.runs_dir)
        if study is not None:  # a search's trials: the study speaks for them (importances, not means per value)
            if not study[1]:
                raise WorkbenchError(f"no trial of study {args.sweep!r} has a run folder here yet; "
                                     f"`workbench sweep join {args.sweep}` trains them")
            paths += study[1]
        elif not jobs:
            raise WorkbenchError(f"no jobs of sweep {args.sweep!r} in the queue of {args.runs_dir}, and no search study "
                                 "of that name in its search.journal (a study elsewhere: give its --storage)")
        else:
            sweep_jobs = len(jobs)
            started = [Path(job.run_dir) for job in jobs if job.run_dir and Path(job.run_dir, "config.toml").is_file()]
            sweeps = {path: args.sweep for path in started}  # known from the queue: not looked up again per run
            paths += started
            if not paths:
                raise WorkbenchError(f"no run of sweep {args.sweep!r} has started yet; "
                                     "`workbench queue run` trains them")
    result = compare(paths, sort_by=args.sort or ("best val" if study else ""), sweeps=sweeps, sweep_jobs=sweep_jobs)
    if args.json:
        from workbench.search_commands import study_record

        print(json.dumps(result.to_dict() | ({"study": study_record(study[0])} if study else {}), indent=2))
        return EXIT_OK
    console = terminal_console()
    tables = comparison_tables(result)
    if study is not None:
        from workbench.search_commands import study_tables

        tables += study_tables(study[0])
    for table in tables:
        console.print(table)
    return EXIT_OK


def terminal_console() -> Console:
    """The terminal's width on a terminal; piped, wide enough that no column breaks a word."""
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def comparison_tables(result) -> list:
    """The runs table, the settings they share, and for a sweep each value's mean best test accuracy."""
    from workbench.core.experiments.compare import METRIC_COLUMNS, format_setting, same_line

    table = Table(title=Text(f"{counted(len(result.runs), 'run')} compared"))
    table.add_column("run", no_wrap=True)
    trials = any(run.trial is not None for run in result.runs)
    if trials:
        table.add_column("trial", justify="right")
    for key in result.differ:
        table.add_column(Text(shown(key.replace("_", " "))), justify="right" if _numeric(result, key) else "left")
    for column in METRIC_COLUMNS:
        table.add_column(column, justify="left" if column == "status" else "right")
    for run in result.runs:
        name = Text(shown(run.name + (f"  ! {run.problem}" if run.problem else "")), style="yellow" if run.problem else "")
        table.add_row(
            name, *([_cell(run.trial, "{}")] if trials else []),
            *(Text(shown(format_setting(run.settings.get(key, "?")))) for key in result.differ),
            Text(shown(run.status)), _cell(run.best_epoch, "{}"), _cell(run.best_val_acc, "{:.2%}"),
            _cell(run.best_test_acc, "{:.2%}"),
            _cell(run.final_test_acc, "{:.2%}"), _cell(run.time_s, "{:.1f} s"), _cell(run.images_per_s, "{:,.0f}"),
        )
    tables: list = [table, Text(shown(same_line(result)))]
    tables += [Text(shown(f"{run.name} {run.status}: {run.reason}")) for run in result.runs
               if run.reason and run.status in ("pruned", "stopped", "failed", "finished")]
    if result.by_value:
        sweep = Table(title=Text(shown(f"sweep {result.sweep}: mean best test accuracy per value")))
        sweep.add_column("setting")
        sweep.add_column("value", justify="right")
        sweep.add_column("mean best test", justify="right")
        sweep.add_column("finished", justify="right")
        for key, values in result.by_value.items():
            for value, score in values.items():
                done, runs = result.by_value_counts[key][value]
                mean = _cell(score, "{:.2%}") + Text(" *" if done < runs else "  ")
                sweep.add_row(Text(shown(key.replace("_", " "))), Text(shown(value)), mean, f"{done} of {runs}")
        tables += [sweep, Text(shown(result.progress_line()))]
    return tables


def _numeric(result, key: str) -> bool:
    return all(isinstance(run.settings.get(key), (int, float)) for run in result.runs if run.settings)


def _cell(value, pattern: str) -> Text:
    return Text("-" if value is None else pattern.format(value))


# ---- sweep --------------------------------------------------------------------------------


def run_sweep(args: argparse.Namespace) -> int:
    from workbench.core.experiments.queue import JobQueue
    from workbench.core.experiments.sweep import expand, fits_checker
    from workbench.core.presets import preset_config

    base, fixed = RunConfig(), []
    if args.preset:
        base, fixed = preset_config(args.preset), ["--preset", args.preset]
    if args.config:
        base = RunConfig.from_toml(Path(args.config), base)
        fixed += ["--config", str(Path(args.config).expanduser().resolve())]
    for item in SETTINGS:  # an on/off flag takes no list: every job gets it as given
        if item.kind == "bool" and (value := getattr(args, item.name, None)) is not None:
            base = base.replace(**{item.name: value})
            fixed.append(item.option if value else "--no-" + item.option[2:])
    given = {item.name: value for item in SETTINGS  # an on/off flag takes no list: it went into `fixed` above
             if item.kind != "bool" and item.name != "runs_dir"
             and (value := getattr(args, item.name, None)) is not None}
    print("checking every value and point before anything is written…", flush=True)  # the checks build networks
    if args.search != "grid":
        from workbench.search_commands import make_study

        return make_study(args, given, base)
    if args.trials or args.prune != "none" or args.storage or args.study:
        raise WorkbenchError("--trials, --prune, --storage and --study belong to a search: add --search tpe")
    if args.sweep_random is not None and args.sweep_random < 1:  # 0 would quietly queue the whole grid
        raise WorkbenchError("--sweep-random takes a number of points, 1 or more")
    sweep = expand(given, base, fixed, random_picks=args.sweep_random or 0, seed=args.sweep_seed, check=fits_checker())
    runs_dir = args.runs_dir or "runs"
    if sweep.duplicates:
        print(shown(sweep.duplicates_line()))
    if args.dry_run:
        for point in sweep.points:
            print(shown(" ".join(point.args)))
        print(f"{counted(len(sweep.points), 'point')}; nothing queued (--dry-run)")
        return EXIT_OK
    queue = JobQueue(runs_dir)
    from workbench.core.experiments.queue import args_for_config

    # Each job keeps its whole config as flags, paths absolute: a --config file edited or a
    # folder named relative to here cannot change what the job trains when its turn comes.
    sweep_id, ids = queue.add_sweep([args_for_config(point.config.absolute()) for point in sweep.points])
    swept = ", ".join(sweep.swept) if sweep.swept else "nothing (one point)"
    print(f"queued {counted(len(ids), 'job')} of {sweep_id} in {shown(queue.path)} (swept: {shown(swept)})")
    where = shown(shlex.quote(str(runs_dir)))  # a command to paste: quoted for the shell, controls as text
    print(f"train them with `workbench queue run --runs-dir {where}`; "
          f"then `workbench compare --sweep {sweep_id} --runs-dir {where}`")
    return EXIT_OK


# ---- queue --------------------------------------------------------------------------------


# ---- watch --------------------------------------------------------------------------------


def run_watch(args: argparse.Namespace) -> int:
    from workbench.core.runs import resolve_run
    from workbench.ui.watch_app import run_watch_app

    return run_watch_app(resolve_run(args.run, args.runs_dir))
