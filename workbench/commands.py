"""The headless subcommands behind `workbench COMMAND`; each returns an exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from workbench.core.errors import WorkbenchError

EXIT_OK, EXIT_FAILED = 0, 1


def run_train(args: argparse.Namespace) -> int:
    from workbench.cli import config_from_args
    from workbench.core import runs
    from workbench.headless import train_headless

    if args.resume:
        run_dir = runs.resolve_run(args.resume, args.runs_dir or "runs")
        config = runs.read_config(run_dir)
        overrides = {
            field: getattr(args, field)
            for field in config.__dataclass_fields__
            if getattr(args, field, None) is not None
        }
        allowed = {"epochs", "device", "runs_dir", "data_dir"}
        changed = sorted(set(overrides) - allowed)
        if changed:
            raise WorkbenchError(
                f"--resume continues a run with its own settings; only "
                f"{', '.join('--' + a.replace('_', '-') for a in sorted(allowed))} may change "
                f"(got --{changed[0].replace('_', '-')})"
            )
        return train_headless(config.replace(**overrides), resume_dir=run_dir)
    return train_headless(config_from_args(args))


def run_models(args: argparse.Namespace) -> int:
    from workbench.core.data import dataset_shape
    from workbench.core.models import count_parameters, create, specs
    from workbench.core.presets import PRESETS

    channels, size, classes = dataset_shape(args.dataset, args.image_size)
    table = Table(title=f"architectures for {args.dataset} ({channels}x{size}x{size}, {classes} classes)")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("params", justify="right")
    for spec in specs():
        params = count_parameters(create(spec.name, channels, classes, size))
        table.add_row(spec.name, spec.description, f"{params:,}")
    console = Console()
    console.print(table)
    presets = Table(title="presets (--preset NAME)")
    presets.add_column("name", style="bold")
    presets.add_column("recipe")
    for name, (description, _) in PRESETS.items():
        presets.add_row(name, description)
    console.print(presets)
    return EXIT_OK


def run_runs(args: argparse.Namespace) -> int:
    from workbench.core.runs import list_runs

    found = list_runs(Path(args.runs_dir))
    if not found:
        print(f"no runs in {args.runs_dir}")
        return EXIT_OK
    table = Table(title=f"runs in {args.runs_dir}")
    for column in ("run", "arch", "dataset", "epochs", "best acc", "status"):
        table.add_column(column, justify="right" if column in ("epochs", "best acc") else "left")
    for run in found:
        best = f"{run.best_acc:.2%}" if run.best_acc is not None else "-"
        table.add_row(run.name, run.arch, run.dataset, f"{run.epochs_done}/{run.epochs}", best, run.status)
    Console().print(table)
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    from workbench.core.export import TOLERANCE, export_run, parse_formats, verify_run_export
    from workbench.core.runs import resolve_run

    formats = parse_formats(args.format)
    run_dir = resolve_run(args.run, args.runs_dir)
    for path in export_run(run_dir, formats, which=args.checkpoint):
        print(f"wrote {path}")
    if not args.verify:
        return EXIT_OK
    results, batch = verify_run_export(run_dir, formats, which=args.checkpoint)
    print(f"verifying on {batch}, tolerance {TOLERANCE:g}")
    for result in results:
        verdict = "ok" if result.passed else "MISMATCH"
        print(f"verify {result.format:<12} max |logit diff| {result.max_abs_diff:.2e}  {verdict}")
    if all(result.passed for result in results):
        return EXIT_OK
    print("workbench: error: an exported format disagrees with the run's model", file=sys.stderr)
    return EXIT_FAILED


def run_predict(args: argparse.Namespace) -> int:
    from workbench.core.predict import predict_files

    results = predict_files(
        Path(args.export_dir), args.images, top=args.top, mc_dropout=args.mc_dropout, device=args.device
    )
    for result in results:
        print(result.path)
        for name, prob, spread in result.top:
            extra = f" ± {spread:.1%}" if args.mc_dropout else ""
            print(f"  {prob:7.2%}{extra}  {name}")
    return EXIT_OK


def run_bench(args: argparse.Namespace) -> int:
    from workbench.core.bench import run_bench_command

    return run_bench_command(args)
