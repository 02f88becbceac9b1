"""The headless subcommands behind `workbench COMMAND`; each returns an exit code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from workbench.core import exit_codes
from workbench.core.errors import WorkbenchError
from workbench.core.shown import shown
from workbench.core.wording import count as counted

EXIT_OK, EXIT_FAILED = exit_codes.OK, exit_codes.FAILED


def run_train(args: argparse.Namespace) -> int:
    from workbench.core import runs
    from workbench.headless import train_headless
    from workbench.options import config_from_args

    if args.gpus is not None:
        from workbench.launch import train_on_gpus

        return train_on_gpus(args.gpus, args.device, args.argv)
    pruner = _trial_pruner(args)
    if args.resume:
        if args.config or args.preset:
            raise WorkbenchError("--resume continues a run with the settings in its config.toml; "
                                 "--config and --preset do not apply")
        run_dir = runs.resolve_run(args.resume, args.runs_dir or "runs")
        config = runs.read_config(run_dir, for_resume=True)
        from workbench.core.config import SETTINGS, changed_on_resume

        # --runs-dir here says where to find the run by name; the run stays in its own folder.
        overrides = {field: getattr(args, field) for field in config.__dataclass_fields__
                     if field != "runs_dir" and getattr(args, field, None) is not None}
        allowed = {item.name for item in SETTINGS if item.resumable and item.flag}  # each declaration says
        # The checkpoint's own comparison: --seed 0 on a run of seed 0, or flip,crop on crop,flip, is no change.
        changed = sorted(name for name, _, _ in changed_on_resume(config.to_dict(), config.replace(**overrides)))
        if changed:
            raise WorkbenchError(
                f"--resume continues a run with its own settings; only "
                f"{', '.join('--' + a.replace('_', '-') for a in sorted(allowed))} may change "
                f"(got --{changed[0].replace('_', '-')})"
            )
        config = config.replace(**overrides, runs_dir=str(run_dir.parent))
        if pruner is not None:
            pruner.check(config)
        return train_headless(config, resume_dir=run_dir, also=_notifier(args), answer=args.answer,
                              run_id=args.run_id, pruner=pruner)
    config = config_from_args(args)
    if pruner is not None:
        pruner.check(config)
    return train_headless(config, also=_notifier(args), answer=args.answer, run_id=args.run_id, pruner=pruner)


def _trial_pruner(args: argparse.Namespace):
    """--study NAME --trial N: the search trial this run is (None for a plain run)."""
    if args.study is None and args.trial is None:
        if args.storage is not None:
            raise WorkbenchError("--storage goes with --study and --trial (a search's trial)")
        return None
    if args.study is None or args.trial is None:
        raise WorkbenchError("--study and --trial go together: the study's name and the trial's number")
    from workbench.core.experiments.search.pruning import TrialPruner

    return TrialPruner(args.study, args.trial, args.storage)


def _notifier(args: argparse.Namespace):
    """--notify bell,desktop: a sink that tells the user when the run ends (None without it)."""
    if not getattr(args, "notify", None):
        return None
    from workbench.core.notify import Notifier, NotifyOnEnd, parse_channels

    channels = parse_channels(args.notify)
    return NotifyOnEnd(Notifier(channels, sys.stderr if sys.stderr.isatty() else None))


def run_models(args: argparse.Namespace) -> int:
    from workbench.core.config import RunConfig
    from workbench.core.data.load import dataset_shape
    from workbench.core.models import fits, parameter_count, specs
    from workbench.core.presets import PRESETS

    given = {"image_size": args.image_size, "dataset": args.dataset, **({"arch": args.arch} if args.arch else {})}
    checked = RunConfig.from_mapping(given)  # the same bounds as train; a network file's absolute path
    channels, size, classes = dataset_shape(args.dataset, args.image_size)
    table = Table(title=Text(f"architectures for {args.dataset} ({channels}x{size}x{size}, {counted(classes, 'class')})"))
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("params", justify="right")
    for spec in specs():
        takes = fits(spec.name, channels, classes, size)
        params = f"{parameter_count(spec.name, channels, classes, size):,}" if takes else "- (images too small)"
        table.add_row(Text(shown(spec.name)), Text(shown(spec.description)), params)
    console = Console()
    layers = _layers_table(checked.arch, channels, classes, size) if args.arch else None  # refused before printing
    console.print(table)
    if layers is not None:
        console.print(layers)
    presets = Table(title="presets (--preset NAME)")
    presets.add_column("name", style="bold")
    presets.add_column("recipe")
    for name, (description, _) in PRESETS.items():
        presets.add_row(Text(name), Text(description))
    console.print(presets)
    return EXIT_OK


def _layers_table(arch: str, channels: int, classes: int, size: int) -> Table:
    """One architecture's layers from a forward pass on a blank image (a network file is checked first)."""
    from workbench.core.catalog import arch_label
    from workbench.core.inspection.summary import model_summary
    from workbench.core.models import check_forward, count_parameters, create, get_spec, input_problem

    problem = input_problem(arch, channels, classes, size)
    if problem:
        raise WorkbenchError(problem)
    with torch_meta():
        model = create(arch, channels, classes, size)
        check_forward(arch, model, channels, classes, size, device="meta")
        rows = model_summary(model, channels, size)
    layers = Table(title=Text(shown(f"{arch_label(arch)}: {get_spec(arch).description}")))
    for name, justify in (("layer", "left"), ("kind", "left"), ("output", "right"), ("params", "right")):
        layers.add_column(name, justify=justify)
    for row in rows:
        layers.add_row(Text("  " * (row.depth - 1) + shown(row.name)), Text(shown(row.kind)), "x".join(map(str, row.output_shape)),
                       f"{row.params:,}" if row.params else "")
    layers.caption = f"{count_parameters(model):,} parameters for {channels}x{size}x{size} images, {counted(classes, 'class')}"
    return layers


def torch_meta():
    """Shapes only: no memory, no time, no random draws."""
    import torch

    return torch.device("meta")


def run_runs(args: argparse.Namespace) -> int:
    from workbench.core.runs import list_runs

    found = list_runs(Path(args.runs_dir))
    if args.json:
        print(json.dumps([_run_record(run) for run in found], indent=2))
        return EXIT_OK
    if not found:
        print(f"no runs in {shown(args.runs_dir)}")
        return EXIT_OK
    columns = ("run", "arch", "lr", "dataset", "epochs", "best acc", "status")
    rows = [
        tuple(shown(cell) for cell in (run.name, run.arch, "-" if run.lr is None else f"{run.lr:g}", run.dataset,
                                       f"{run.epochs_done}/{run.epochs}", _best_text(run), run.status))
        for run in found
    ]
    if args.plain or not sys.stdout.isatty():  # whole names, one run per line, for scripts and copying
        for row in (columns, *rows):  # a header row first, as a spreadsheet or `column -t` expects
            print("\t".join(row))
        return EXIT_OK
    table = Table(title=Text(f"runs in {shown(args.runs_dir)}"))
    for column in columns:
        table.add_column(column, justify="right" if column in ("lr", "epochs", "best acc") else "left",
                         no_wrap=column == "run", overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # names and paths are shown literally, never as markup
    Console().print(table)
    return EXIT_OK


def _best_text(run) -> str:
    if run.best_acc is None:
        return "-"
    return f"{run.best_acc:.2%} {run.best_split}" + (f" @{run.best_epoch}" if run.best_epoch else "")


def _run_record(run) -> dict:
    return {
        "name": run.name, "path": str(run.path), "arch": run.arch, "dataset": run.dataset,
        "epochs": run.epochs, "epochs_done": run.epochs_done, "best_acc": run.best_acc,
        "best_split": run.best_split, "best_epoch": run.best_epoch, "status": run.status, "lr": run.lr,
        "started": run.started.isoformat() if run.started else None,
    }


def run_export(args: argparse.Namespace) -> int:
    from workbench.core.export.bundle import export_run, parse_formats
    from workbench.core.export.verify import TOLERANCE, verify_run_export
    from workbench.core.runs import resolve_run

    formats = parse_formats(args.format)
    run_dir = resolve_run(args.run, args.runs_dir)
    chosen: list[str] = []
    paths = export_run(run_dir, formats, which=args.checkpoint, log=chosen.append, verify=args.verify)
    results, batch = (verify_run_export(run_dir, formats, which=args.checkpoint, reference=paths.model)
                      if args.verify else ([], ""))
    report = {
        "run_dir": str(run_dir), "paths": [str(p) for p in paths], "chosen": chosen[:1],
        "compared_on": batch, "tolerance": TOLERANCE,
        "checks": [{"format": r.format, "max_abs_diff": r.max_abs_diff, "passed": r.passed} for r in results],
    }
    if args.answer is not None or args.json:  # for the app, which exports in a process of its own
        args.answer.result(**report) if args.answer is not None else print(json.dumps(report))
        return EXIT_OK if all(r.passed for r in results) else EXIT_FAILED
    for line in chosen[:1]:
        print(shown(line))
    for path in paths:
        print(f"wrote {shown(path)}")
    if not args.verify:
        return EXIT_OK
    print(f"verifying on {batch}, tolerance {TOLERANCE:g}")
    for result in results:
        verdict = "ok" if result.passed else "MISMATCH"
        print(f"verify {result.format:<12} max |logit diff| {result.max_abs_diff:.2e}  {verdict}")
    if all(result.passed for result in results):
        return EXIT_OK
    print("workbench: error: an exported format disagrees with the run's model", file=sys.stderr)
    return EXIT_FAILED


def run_runs_export(args: argparse.Namespace) -> int:
    from workbench.core import runs
    from workbench.core.atomic import write_text_atomic
    from workbench.core.export.metrics import metrics_csv, write_tensorboard

    run_dir = runs.resolve_run(args.run, args.runs_dir)
    if args.tensorboard:
        folder, written = write_tensorboard(run_dir, Path(args.tensorboard))
        print(f"wrote {written:,} scalars to {shown(folder)}; view them with `tensorboard --logdir "
              f"{shown(args.tensorboard)}`", file=sys.stderr)
    if args.csv and args.csv != "-":
        write_text_atomic(Path(args.csv), metrics_csv(run_dir, steps=args.steps))
        print(f"wrote {shown(args.csv)}", file=sys.stderr)
    elif args.csv == "-" or not args.tensorboard:
        sys.stdout.write(metrics_csv(run_dir, steps=args.steps))
    return EXIT_OK


def run_predict(args: argparse.Namespace) -> int:
    from workbench.core.export.loading import stale_bundle_note
    from workbench.core.export.predict import predict_files

    given = Path(args.export_dir)
    model_format = args.format or {"model.pt2": "pt2", "model.onnx": "onnx"}.get(given.name, "safetensors")
    if args.csv == "-" and args.json == "-":
        raise WorkbenchError("--csv - and --json - both want stdout; write one of them to a file")
    stale = stale_bundle_note(given)  # a bundle file names its folder
    if stale:
        print(f"warning: {shown(stale)}", file=sys.stderr)
    predicted = predict_files(given, args.images, top=args.top, mc_dropout=args.mc_dropout, device=args.device,
                              trust_code=args.trust_code, model_format=model_format)
    for path, why in predicted.skipped:
        print(f"skipped {shown(path)}: {why}", file=sys.stderr)
    if "-" not in (args.csv, args.json):
        for result in predicted.results:
            print(shown(result.path))
            for name, prob, spread in result.top:
                extra = f" ± {spread:.1%}" if args.mc_dropout else ""
                print(f"  {prob:7.2%}{extra}  {shown(name)}")
    from workbench.core.export.predict import as_csv, as_json

    for target, text in ((args.csv, lambda found: as_csv(found, spread=bool(args.mc_dropout))), (args.json, as_json)):
        if target == "-":
            sys.stdout.write(text(predicted))
        elif target:
            from workbench.core.atomic import write_text_atomic

            write_text_atomic(Path(target), text(predicted))
            print(f"wrote {shown(target)}", file=sys.stderr)
    if predicted.skipped:
        print(f"classified {counted(len(predicted.results), 'image')}; skipped {len(predicted.skipped)}", file=sys.stderr)
    return EXIT_OK


def run_lr_find(args: argparse.Namespace) -> int:
    from workbench.tuning import run_lr_find as lr_find

    return lr_find(args)


def run_batch_find(args: argparse.Namespace) -> int:
    from workbench.tuning import run_batch_find as batch_find

    return batch_find(args)


def run_bench(args: argparse.Namespace) -> int:
    from workbench.bench.command import run_bench_command

    return run_bench_command(args)


def run_reproduce(args: argparse.Namespace) -> int:
    from workbench.reproduce import run_reproduce as reproduce

    return reproduce(args)
