"""Every child `workbench` process starts here, and its answer is read here (both sides of it).

A child is started one way: `python -m workbench COMMAND ... --json-lines`, with the run's
settings in one complete config file written at launch (every path in it absolute), never
rebuilt as flags. It answers on stdout with JSON lines: the rows of core/events.py for a
training run (start, steps, epochs, notices, the end or the failure), and "progress",
"result" or "error" (the sentence, and the setting at fault) for the other commands. Its
human output goes to a log beside the answer. Callers never build a command line or parse a
line of text: they get a Child and read rows, or call `run` and get the result.

Data-parallel training is the same child started through torch.distributed.run (what the
`torchrun` command runs), never a home-made launcher: `train --gpus N` in this process, the
app's devices field as a child; only rank 0 answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from workbench.core import exit_codes
from workbench.core.atomic import write_text_atomic
from workbench.core.errors import WorkbenchError
from workbench.core.lifecycle.tail import JsonLinesTail
from workbench.core.safe_read import ensure_folder, open_to_write

ANSWER_FLAG = "--json-lines"
POLL_S = 0.1

EXIT_FAILED = exit_codes.FAILED


def without_gpus_flag(argv: Sequence[str]) -> list[str]:
    """The train arguments with --gpus N (or --gpus=N) taken out: each process trains one share."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument == "--gpus":
            skip = True
        elif not argument.startswith("--gpus="):
            kept.append(argument)
    return kept


def torchrun_args(gpus: int, argv: Sequence[str]) -> list[str]:
    """torchrun's command line for `workbench train --gpus N ARGS`."""
    return ["--standalone", "--nproc-per-node", str(gpus), "-m", "workbench", "train", *without_gpus_flag(argv)]


def check_gpus(gpus: int, device: str | None, visible: int) -> None:
    """Refuse, before anything starts, a --gpus this machine cannot give."""
    if gpus < 1:
        raise WorkbenchError(f"--gpus: {gpus} is not a number of GPUs; give 1 or more")
    if device in ("cpu", "mps"):
        raise WorkbenchError(f"--gpus trains on CUDA GPUs, not --device {device}; for several CPU processes run "
                             f"torchrun --nproc-per-node {gpus} -m workbench train --device cpu ...")
    if visible < gpus:
        raise WorkbenchError(
            f"--gpus {gpus}: only {visible} CUDA GPU{'' if visible == 1 else 's'} visible here; give --gpus {visible} "
            f"or fewer (for several CPU processes: torchrun --nproc-per-node {gpus} -m workbench train --device cpu ...)"
            if visible else
            f"--gpus {gpus}: no CUDA GPU is visible here; train without --gpus, or start CPU processes with "
            f"torchrun --nproc-per-node {gpus} -m workbench train --device cpu ..."
        )


def train_on_gpus(gpus: int, device: str | None, argv: Sequence[str]) -> int:
    """Start the job through torch.distributed.run and wait for it; its exit code is the job's."""
    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from workbench.core.training.distributed import World

    if World.from_env().distributed:
        raise WorkbenchError("--gpus starts its own processes; it cannot run inside torchrun (drop --gpus)")
    check_gpus(gpus, device, torch.cuda.device_count())
    try:
        run(parse_args(torchrun_args(gpus, argv)))
    except ChildFailedError as failed:  # the ranks said why (rank 0 for bad input); torchrun lists exit codes
        _rank, failure = failed.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else EXIT_FAILED
    return 0


# ---- the child's side: its answer ---------------------------------------------------------


class Answer:
    """What a child started with --json-lines writes to stdout: one JSON object a line."""

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def row(self, row: dict[str, Any]) -> None:
        self.stream.write(json.dumps(row) + "\n")
        self.stream.flush()

    def progress(self, **values: Any) -> None:
        self.row({"type": "progress", **values})

    def result(self, **values: Any) -> None:
        self.row({"type": "result", **values})

    def error(self, message: str, field: str | None = None, code: int = 2) -> None:
        self.row({"type": "error", "message": message, "field": field, "exit_code": code})


def answering(argv: Sequence[str]) -> bool:
    """Whether this process was started to answer in JSON lines."""
    return ANSWER_FLAG in argv


# ---- the parent's side: start a child, read its answer ---------------------------------------


class ChildFailed(WorkbenchError):
    """A child's structured error: its sentence, and the setting at fault when there is one."""


@dataclass
class Child:
    """A started `workbench` process: its answer (rows) is read from `answer`, its output is in `log`."""

    process: subprocess.Popen
    answer: Path
    log: Path
    run_id: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._tail = JsonLinesTail(self.answer)

    def rows(self) -> list[dict[str, Any]]:
        """The rows the child wrote since the last call."""
        new, _ = self._tail.read()
        self.seen += new
        return new

    def poll(self) -> int | None:
        return self.process.poll()

    def run_dir(self) -> Path | None:
        """The run folder a training child works in, from its start row (or its failure's)."""
        self.rows()
        for row in reversed(self.seen):
            if row.get("type") in ("start", "failed") and row.get("run_dir"):
                return Path(row["run_dir"])
        return None

    def problem(self) -> ChildFailed | None:
        """The child's own error (a refusal, or the run's failure), once it said one."""
        self.rows()
        for row in reversed(self.seen):
            if row.get("type") == "error":
                return ChildFailed(str(row.get("message") or "failed"), field=row.get("field"))
            if row.get("type") == "failed":
                return ChildFailed(str(row.get("reason") or "failed"), field=row.get("field"))
        return None

    def failure(self) -> str:
        """Why the child ended badly, in one sentence: its own, else where its output is."""
        said = self.problem()
        if said is not None:
            return str(said)
        return f"exit code {self.process.poll()}; its output is in {self.log}"

    def result(self) -> dict[str, Any] | None:
        self.rows()
        return next((row for row in reversed(self.seen) if row.get("type") == "result"), None)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()


def start(command: str, *, args: Sequence[str] = (), config=None, folder: Path | None = None, run_id: str = "",
          processes: int = 1, env: dict[str, str] | None = None, detach: bool = False,
          die_with_parent: bool = False) -> Child:
    """Start `workbench COMMAND ARGS --json-lines` (through torch.distributed.run with `processes` > 1).

    `config` (a RunConfig) is written, with absolute paths, to a file the child reads with
    --config; `folder` keeps that file, the answer and the log (a new temporary folder if None);
    `run_id` names them, and a training child records it in run.json; `detach` starts the child
    in its own session, so Ctrl-C in this terminal stays this process's; `die_with_parent` has
    Linux send the child SIGTERM when this process dies (a queue runner killed outright: its
    trainer stops with a checkpoint instead of training on unowned, to be started twice)."""
    folder = ensure_folder(folder) if folder is not None else Path(tempfile.mkdtemp(prefix=f"workbench-{command}-"))
    name = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{uuid.uuid4().hex[:8]}"
    argv = [command, *args]
    if config is not None:
        config_file = folder / f"{name}.toml"
        write_text_atomic(config_file, config.absolute().to_toml())  # replaces whatever was there, a pipe too
        argv += ["--config", str(config_file)]
    if run_id and command == "train":  # a trainer records it in run.json; other commands only name files by it
        argv += ["--run-id", run_id]
    argv.append(ANSWER_FLAG)
    if processes > 1:
        line = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                "-m", "workbench", *argv]
    else:
        line = [sys.executable, "-m", "workbench", *argv]
    answer, log = folder / f"{name}.jsonl", folder / f"{name}.log"
    with open_to_write(log, append=True) as err, open_to_write(answer) as out:  # the log first: it is only appended to
        err.write("$ " + " ".join(line) + "\n")
        err.flush()
        process = subprocess.Popen(line, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=detach, preexec_fn=_term_with_parent if die_with_parent else None)
    return Child(process, answer, log, run_id)


def _term_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)


def run(command: str, *, args: Sequence[str] = (), config=None, on_progress: Callable[[dict], None] | None = None,
        cancelled: Callable[[], bool] = lambda: False) -> dict[str, Any] | None:
    """Start a child, hand its progress rows to `on_progress`, and return its result row;
    raises ChildFailed with the child's own sentence (and field) when it fails. None when cancelled."""
    with tempfile.TemporaryDirectory(prefix=f"workbench-{command}-") as folder:
        child = start(command, args=args, config=config, folder=Path(folder))
        try:
            while True:
                ended = child.poll() is not None
                for row in child.rows():
                    if row.get("type") == "progress" and on_progress is not None:
                        on_progress(row)
                if ended:
                    break
                if cancelled():
                    child.stop()
                    child.process.wait()
                    return None
                time.sleep(POLL_S)
        finally:
            child.stop()
        result = child.result()
        if result is not None:
            return result
        raise child.problem() or ChildFailed(child.failure())


def new_run_id(kind: str) -> str:
    """An id a parent gives a training child: unique, and readable in a file listing."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:8]}"


# ---- from the app: a data-parallel job, as a child that outlives the app ----------------------

MAX_DEVICES = 256


def devices_problem(devices: int, device: str, visible_gpus: int, recipe: str) -> str:
    """Why the app cannot start `devices` processes for this run, or "" (1 is a plain run)."""
    if not 1 <= devices <= MAX_DEVICES:
        return f"{devices} is outside 1..{MAX_DEVICES}"
    if devices == 1:
        return ""
    if recipe != "standard":
        return f"the {recipe} recipe trains in one process; use 1 device"
    if device in ("cuda", "auto") and visible_gpus:
        if visible_gpus < devices:
            return f"only {visible_gpus} CUDA GPU{'' if visible_gpus == 1 else 's'} visible here"
        return ""
    if device == "cuda":
        return "no CUDA GPU is visible here"
    if device == "mps":
        return "data-parallel training runs on CUDA GPUs or CPU processes, not mps"
    return ""  # CPU processes (gloo): slower than one process, but the same job as on GPUs


def start_data_parallel(config, devices: int) -> Child:
    """Start `config` on `devices` processes through torch.distributed.run (gloo on CPU, nccl on
    CUDA); returns at once. The job outlives the app, like a queue job; its answer and log are
    kept in RUNS_DIR/.launch."""
    runs_dir = Path(config.runs_dir).expanduser().resolve()
    return start("train", config=config, folder=runs_dir / ".launch", run_id=new_run_id("data-parallel"),
                 processes=devices, detach=True)
