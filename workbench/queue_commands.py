"""`workbench queue`: list a runs folder's job queue, add to it, work through it, remove from it.

The queue itself (its file, its jobs, the runner) is core/experiments; this module is its command
line: flags, the listing table, and starting each job's trainer through the launcher.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from rich.table import Table
from rich.text import Text

from workbench.core import exit_codes
from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.experiments.runner import JobNotStartable
from workbench.core.shown import shown
from workbench.core.wording import count as counted
from workbench.experiment_commands import terminal_console
from workbench.options import add_setting_option

EXIT_OK = exit_codes.OK
MAX_LIMIT = 1_000_000  # `queue --limit`: beyond this, --all says what is meant

def queue_options(parser: argparse.ArgumentParser) -> None:
    from workbench.options import add_train_options

    parser.description = "The job queue of a runs folder: list it (the default), add a job, work through it."
    add_setting_option(parser, "runs_dir", "the runs folder whose queue this is")
    _listing_options(parser)
    parser.set_defaults(action="list")
    actions = parser.add_subparsers(dest="action", metavar="{list,add,run,remove}", parser_class=type(parser))
    for name, text in (("list", "the jobs: pending, running, done, failed, stopped"),
                       ("add", "queue one run with these train flags"),
                       ("run", "work through the pending jobs; a job cut off before resumes from its checkpoint"),
                       ("remove", "take a job that is not running out of the queue")):
        sub = actions.add_parser(name, help=text, description=text)
        if name == "add":
            add_train_options(sub)
        else:
            sub.add_argument("--runs-dir", help="(default: runs)")
        for action in sub._actions:  # given here, it wins; not given, the queue's own --runs-dir stays
            if action.dest == "runs_dir":
                action.default = argparse.SUPPRESS
        if name == "list":
            _listing_options(sub, argparse.SUPPRESS)
        elif name == "run":
            sub.add_argument("--parallel", type=int, default=1, metavar="N", help="jobs at once (default: 1)")
            sub.add_argument("--gpus", default=None, metavar="LIST",
                             help="GPUs to hand out, one per job, e.g. 0,1 (default: every visible one)")
            sub.add_argument("--notify", metavar="bell,desktop", help="tell me when each job ends, and when all are done")
        elif name == "remove":
            sub.add_argument("job", type=int, help="the job's id (see `workbench queue`)")


def _listing_options(parser: argparse.ArgumentParser, default=None) -> None:
    """`queue` and `queue list` take these; given after `list`, they win."""
    from workbench.core.experiments.queue import SHOWN

    unset = {} if default is None else {"default": default}
    parser.add_argument("--json", action="store_true", help="the jobs shown, as JSON", **unset)
    parser.add_argument("--limit", type=int, metavar="N", default=unset.get("default", SHOWN),
                        help=f"show the running jobs, the next N pending and the last N ended (default: {SHOWN})")
    parser.add_argument("--all", action="store_true", help="show every job, oldest first", **unset)


def run_queue(args: argparse.Namespace) -> int:
    from workbench.core.experiments.queue import JobQueue

    queue = JobQueue(args.runs_dir)
    if args.action == "add":
        return _queue_add(queue, args)
    if args.action == "remove":
        if queue.counts().get("running"):  # read first: a refused remove writes nothing
            queue.recover()  # a job whose runner died (killed outright) is not running any more
        queue.remove(args.job)
        print(f"removed job {args.job}")
        return EXIT_OK
    if args.action == "run":
        return _queue_run(queue, args)
    if not 1 <= args.limit <= MAX_LIMIT:
        raise WorkbenchError(f"--limit takes 1 to {MAX_LIMIT:,} jobs per group; --all shows every job")
    jobs, counts = queue.listing(None if args.all else args.limit)
    if counts.get("running") and _recovered(queue):  # shown as they are: a dead runner's jobs are not running
        jobs, counts = queue.listing(None if args.all else args.limit)
    if args.json:
        print(json.dumps([job.to_dict() for job in jobs], indent=2))
        return EXIT_OK
    if not counts:
        print(f"no jobs in the queue of {shown(args.runs_dir)}; add some with `workbench sweep` or `workbench queue add`")
        return EXIT_OK
    tally = " · ".join(f"{n:,} {state}" for state, n in counts.items())
    print(shown(f"queue of {args.runs_dir}: {tally}"))  # a line of its own: a table title would wrap
    terminal_console().print(queue_table(jobs))
    total = sum(counts.values())
    if len(jobs) < total:
        print(f"showing {len(jobs):,} of {total:,} jobs: the running ones, the next {args.limit:,} pending and the "
              f"last {args.limit:,} ended; --limit N shows more, --all every job")
    return EXIT_OK


def _recovered(queue) -> bool:
    """Put back the jobs of runners that died; False when none or the queue cannot be written here."""
    try:
        return bool(queue.recover())
    except WorkbenchError:
        return False


def queue_table(jobs) -> Table:
    table = Table()
    for column in ("job", "state", "sweep", "train flags", "run", "gpu", "note"):
        table.add_column(column, overflow="fold", no_wrap=column in ("job", "state", "sweep", "gpu"))
    for job in jobs:
        cells = (str(job.id), job.state, job.sweep or "-", " ".join(job.args),
                 Path(job.run_dir).name if job.run_dir else "-", job.gpu or "-",
                 f"damaged: {job.damaged}" if job.damaged else job.reason)
        table.add_row(*(Text(shown(cell)) for cell in cells))  # the queue is a file: shown as text
    return table


def _queue_add(queue, args: argparse.Namespace) -> int:
    """One job: its settings checked now (not when its turn comes), kept as explicit flags."""
    from workbench.core.experiments.queue import args_for_config
    from workbench.options import config_from_args

    from workbench.core.training.start import check_start

    config = config_from_args(args)
    check_start(config)  # a weights file or a starting run that is not there is refused now, not at its turn
    [job_id] = queue.add([args_for_config(config.absolute())])  # the whole config, paths absolute
    print(f"queued job {job_id} in {shown(queue.path)}")
    return EXIT_OK


def _queue_run(queue, args: argparse.Namespace) -> int:
    from workbench.core.experiments.runner import QueueRunner, visible_gpus
    from workbench.core.notify import Notifier, parse_channels, run_ended_message

    if not queue.exists:  # a mistyped --runs-dir would otherwise get a queue of its own, and nothing to run
        raise WorkbenchError(f"no queue in {shown(args.runs_dir)}: `workbench queue add` or `workbench sweep` "
                             "makes one (--runs-dir names the folder)")
    most = 4 * (os.cpu_count() or 1)  # each job is a training process: more would only thrash
    if not 1 <= args.parallel <= most:
        raise WorkbenchError(f"--parallel takes 1 to {most} jobs at once (4 per CPU core of this machine)")
    from workbench.core.training.control import stop_grace_s

    stop_grace_s()  # a bad WORKBENCH_STOP_GRACE_S is this command's mistake, not every job's
    notify = Notifier(parse_channels(args.notify), sys.stderr if sys.stderr.isatty() else None) if args.notify else None
    gpus = _gpu_list(args.gpus) if args.gpus is not None else (visible_gpus() if args.parallel > 1 else ())

    def say(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {shown(line)}", flush=True)

    failed_here: list[int] = []  # the jobs that failed under this runner
    stopped_by: list[int] = []  # the signal that stopped it

    def ended(job_end) -> None:
        if job_end.state == "failed":
            failed_here.append(job_end.job.id)
        if notify is not None:
            status = {"done": "finished", "pending": "stopped"}.get(job_end.state, job_end.state)
            name = Path(job_end.run_dir).name if job_end.run_dir else f"job {job_end.job.id}"
            notify(*run_ended_message(status, job_end.reason or job_end.state, name))

    runner = QueueRunner(queue, start_job=lambda job, gpu: start_job(queue, job, gpu), parallel=args.parallel,
                         gpus=gpus, on_event=say, on_job_end=ended)

    def on_signal(signum, frame):
        stopped_by.append(signum)
        say("stopping: the running jobs save a checkpoint and go back to the queue")
        runner.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        count = runner.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    counts = queue.counts()
    left, failed = counts.get("pending", 0), counts.get("failed", 0)
    say(f"{counted(count, 'job')} ended here; {left} pending, {failed} failed in the queue")
    if notify is not None and not left:
        notify("workbench: the queue is done", f"{counted(count, 'job')} ended, {failed} failed")
    # What a scheduler or a script reads: stopped by a signal as `train` is, else whether a job failed here.
    if stopped_by:
        return exit_codes.TERMINATED if stopped_by[0] == signal.SIGTERM else exit_codes.STOPPED
    return exit_codes.FAILED if failed_here else EXIT_OK


def _gpu_list(text: str) -> tuple[str, ...]:
    """--gpus: CUDA device indexes or UUIDs (GPU-..., MIG-...), as CUDA_VISIBLE_DEVICES takes them."""
    import re

    gpus = tuple(g.strip() for g in text.split(","))
    for gpu in gpus:
        if not re.fullmatch(r"\d{1,3}|(GPU|MIG)-[0-9A-Za-z/-]{1,80}", gpu):
            raise WorkbenchError(f"--gpus {shown(text)}: {shown(gpu) or 'an empty entry'} is not a GPU index "
                                 "(0, 1, ...) or a GPU-/MIG- UUID")
    return gpus


def start_job(queue, job, gpu: str):
    """A job's trainer through the launcher: a resumable job resumes its run folder; a new one
    gets its flags checked into a complete config file (the runs folder is the queue's)."""
    import os

    from workbench import launch

    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu else {})}
    runs_dir = str(queue.runs_dir.resolve())
    from workbench.core.experiments.queue import job_run_id

    folder, run_id = queue.log_dir, job_run_id(job.id)
    if job.resumable:
        return launch.start("train", args=["--resume", str(Path(job.run_dir).resolve()), "--runs-dir", runs_dir],
                            folder=folder, run_id=run_id, env=env, die_with_parent=True)
    return launch.start("train", config=_job_config(job).replace(runs_dir=runs_dir), folder=folder, run_id=run_id,
                        env=env, die_with_parent=True)


class _QuietParser(argparse.ArgumentParser):
    """Parses a job's stored flags: a mistake is an exception with argparse's sentence, never a usage block."""

    def error(self, message: str):
        raise JobNotStartable(message)


def _job_config(job) -> RunConfig:
    """The config a job's flags make, or JobNotStartable in one line (flags edited by hand, or
    written by a workbench that knew other settings)."""
    import contextlib
    import io

    from workbench.options import add_train_options, config_from_args

    parser = _QuietParser(add_help=False, exit_on_error=False, prog="train")
    add_train_options(parser)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return config_from_args(parser.parse_args(list(job.args)))
    except WorkbenchError as refused:  # argparse's sentence (JobNotStartable) or a value's
        raise JobNotStartable(f"its flags make no run: {refused}") from None
    except (argparse.ArgumentError, SystemExit) as refused:
        raise JobNotStartable(f"its flags make no run: {shown(refused)}") from None
