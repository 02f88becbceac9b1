"""`workbench sweep --search tpe` makes an Optuna study; `workbench sweep join STUDY` trains its
trials (on this machine or any other that reaches the storage); `compare --sweep STUDY` reads it."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import time
from pathlib import Path

from rich.text import Text

from workbench.core import exit_codes
from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.experiments.search.study import PRUNERS, SAMPLERS
from workbench.core.shown import shown
from workbench.core.wording import count as counted
from workbench.options import add_setting_option

EXIT_OK = exit_codes.OK


def add_search_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "search: an Optuna study instead of a grid (pip install -e \".[search]\"); a range LOW:HIGH on a number "
        "(--lr 1e-5:1e-1, log scale for rates and weight decay), a comma list is a choice")
    group.add_argument("--search", choices=("grid", *SAMPLERS), default="grid",
                       help="grid: queue every point (default); tpe: Optuna's TPE sampler picks each trial "
                            "from the ones before it; `workbench sweep join STUDY` trains them")
    group.add_argument("--trials", type=int, default=0, metavar="N", help="tpe: trials to train")
    group.add_argument("--prune", choices=PRUNERS, default="none",
                       help="tpe: stop a trial after an epoch whose validation accuracy trails the others "
                            "(median, successive halving or hyperband); its checkpoint is kept")
    group.add_argument("--storage", metavar="URL",
                       help="tpe: the study's storage, an RDB URL (postgresql://...) or a journal file on a shared "
                            "disk, for workers on several machines (default: RUNS_DIR/search.journal)")
    group.add_argument("--study", metavar="NAME", help="tpe: the study's name (default: search-DATE-TIME)")


def join_options(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Train the trials of a search study until it has its number of them; run it on as many "
                          "machines as reach the storage. Ctrl-C stops the trainers, which keep their "
                          "checkpoints, and hands their trials back.")
    parser.add_argument("study", help="the study's name (`workbench sweep --search tpe` printed it)")
    parser.add_argument("--storage", metavar="URL", help="the study's storage (default: RUNS_DIR/search.journal)")
    add_setting_option(parser, "runs_dir", "where this machine's trial runs go")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="trials trained at once (default: 1)")
    parser.add_argument("--gpus", metavar="LIST", help="one trial per GPU at once, e.g. 0,1 (sets --workers)")
    parser.add_argument("--processes-per-trial", type=int, default=1, metavar="N",
                        help="each trial trains data-parallel on N processes through torch.distributed.run "
                             "(N GPUs, or CPU processes with --device cpu in the study)")


# ---- making a study --------------------------------------------------------------------------


def make_study(args: argparse.Namespace, given: dict[str, str], base: RunConfig) -> int:
    from workbench.core.experiments.search.space import parse_space
    from workbench.core.experiments.search.study import (
        check_study_name, create_search, require_optuna, shown_storage, storage_url)
    from workbench.core.experiments.sweep import fits_checker

    require_optuna()
    if args.sweep_random:
        raise WorkbenchError("--sweep-random picks from a grid; a --search tpe study takes --trials N")
    if args.trials < 1:
        raise WorkbenchError("--search tpe needs --trials N, the number of trials to train (1 or more)")
    space, fixed = parse_space(given, base)
    base = RunConfig.from_mapping(fixed, base).absolute()
    searched = {dimension.name: dimension for dimension in space.dimensions}
    if base.val_fraction == 0 or (searched.get("val_fraction") and (
            any(float(choice) == 0 for choice in searched["val_fraction"].choices)
            or searched["val_fraction"].low == 0)):
        raise WorkbenchError("a search judges each trial on its validation accuracy; give --val-fraction above 0 "
                             "(every value of a choice or range)")
    fits = fits_checker()
    for dimension in space.dimensions:  # every choice on its own, so a refusal names it
        for choice in dimension.choices or ():
            if problem := fits(RunConfig.from_mapping({dimension.name: choice}, base)):
                raise WorkbenchError(f"the choice --{dimension.name.replace('_', '-')} {choice} is refused "
                                     f"({problem}); no study was made")
    if problem := fits(base):
        raise WorkbenchError(f"{problem}; no study was made")
    runs_dir = args.runs_dir or "runs"
    url = storage_url(args.storage, runs_dir)
    name = check_study_name(args.study) if args.study is not None else time.strftime("search-%Y%m%d-%H%M%S")
    pruning = "no pruning" if args.prune == "none" else f"pruning: {args.prune}"
    said = f"{counted(args.trials, 'trial')} by TPE, {pruning}; searching {space.describe()}"
    if args.dry_run:
        _check_name_is_free(name, url)
        print(shown(f"study {name}: {said}; nothing made (--dry-run)"))
        return EXIT_OK
    create_search(name, url, base.replace(runs_dir=str(Path(runs_dir).expanduser().resolve())), space,
                  trials=args.trials, prune=args.prune, seed=args.sweep_seed)
    where = shown(shlex.quote(str(runs_dir)))
    storage = "" if args.storage is None else f" --storage {shlex.quote(shown_storage(url))}"
    print(shown(f"study {name} in {shown_storage(url)}: {said}"))
    print(shown(f"train its trials with `workbench sweep join {name} --runs-dir {where}{storage}` (--workers N or "
                f"--gpus 0,1 for several at once; on another machine give --storage with a shared storage); "
                f"then `workbench compare --sweep {name} --runs-dir {where}{storage}`"))
    return EXIT_OK


def _check_name_is_free(name: str, url: str) -> None:
    """--dry-run says what the real command would refuse: a name its journal already has (an RDB
    is not opened: that would create its tables)."""
    from workbench.core.experiments.search.study import open_storage, refuse_taken_name

    if "://" not in url and Path(url).exists():
        refuse_taken_name(name, open_storage(url), url)


# ---- joining one ------------------------------------------------------------------------------


def run_join(args: argparse.Namespace) -> int:
    from workbench.core.experiments.search.results import counts
    from workbench.core.experiments.search.study import load_search, storage_url
    from workbench.core.experiments.search.worker import SearchWorker

    if args.workers < 1 or args.processes_per_trial < 1:
        raise WorkbenchError("--workers and --processes-per-trial take a number, 1 or more")
    gpus = tuple(g.strip() for g in args.gpus.split(",") if g.strip()) if args.gpus else ()
    if args.gpus is not None and not gpus:
        raise WorkbenchError("--gpus takes a comma list of GPU numbers, e.g. 0,1")
    runs_dir = Path(args.runs_dir).expanduser().resolve()
    url = storage_url(args.storage, runs_dir)
    from workbench.core.experiments.search.liveness import worker_tag

    search = load_search(args.study, url, worker=worker_tag())
    worker = SearchWorker(search, runs_dir, _trial_starter(search, url, runs_dir, args.processes_per_trial),
                          slots=len(gpus) or args.workers, gpus=gpus,
                          on_event=lambda line: print(shown(line), flush=True))

    def on_signal(signum, frame):
        print("stopping: each trainer saves a checkpoint; its trial goes back to the study", flush=True)
        worker.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(shown(f"joined study {search.name}: {counts(search).line()}"), flush=True)
        ended = worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(shown(f"this worker trained {counted(ended, 'trial')}; the study: {counts(search).line()}"))
    return exit_codes.STOPPED if worker._stop.is_set() else EXIT_OK


def _trial_starter(search, url: str, runs_dir: Path, processes: int):
    from workbench import launch
    from workbench.core.experiments.search.liveness import worker_tag
    from workbench.core.experiments.search.study import STORAGE_ENV, WORKER_ENV

    def start(config: RunConfig, number: int, gpu: str):
        env = {**os.environ, STORAGE_ENV: url, WORKER_ENV: worker_tag(),
               **({"CUDA_VISIBLE_DEVICES": gpu} if gpu else {})}
        return launch.start("train", args=["--study", search.name, "--trial", str(number)], config=config,
                            folder=runs_dir / ".launch", run_id=launch.new_run_id(f"trial{number}"),
                            processes=processes, env=env, die_with_parent=True)

    return start


# ---- compare --sweep STUDY --------------------------------------------------------------------


def study_runs(name: str, storage: str | None, runs_dir: str):
    """The search `name` if the storage has it, with its trials' run folders; None when it has none."""
    from workbench.core.experiments.search.results import trial_runs
    from workbench.core.experiments.search.study import load_search, storage_url

    url = storage_url(storage, runs_dir)
    if storage is None and not Path(url).exists():
        return None
    search = load_search(name, url)
    paths = [Path(path) for path in trial_runs(search).values() if Path(path, "config.toml").is_file()]
    return search, paths


def study_tables(search) -> list:
    """The study's counts, its best trial and each searched setting's importance."""
    from workbench.core.experiments.search.results import counts, summary_lines

    out: list = [Text(shown(line)) for line in summary_lines(search)]
    out += [Text(shown(f"trial {number} failed: {reason}")) for number, reason in counts(search).reasons.items()]
    return out


def study_record(search) -> dict:
    """The study for `compare --json`: its counts, best trial and importances."""
    from dataclasses import asdict

    from workbench.core.experiments.search.results import best_trial, counts, importance

    best = best_trial(search)
    return {"name": search.name, "counts": asdict(counts(search)),
            "best": None if best is None else {"trial": best.number, "best_val_acc": best.value, "params": best.params,
                                               "run_dir": best.user_attrs.get("run_dir")},
            "importance": importance(search)}
