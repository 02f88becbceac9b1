"""`workbench train --gpus N`: the same training, one process per GPU, started by PyTorch's own
launcher (torch.distributed.run, which is what the `torchrun` command runs), never a home-made one.

It is exactly `torchrun --standalone --nproc-per-node N -m workbench train ...` with the other
flags as given; use torchrun itself for several machines (--nnodes, --rdzv-endpoint) or for
restarts after a failure (--max-restarts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from workbench.core.errors import WorkbenchError

EXIT_FAILED = 1


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


# ---- from the app: a data-parallel job in processes of its own, followed through its folder ----

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


@dataclass
class DataParallelJob:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m workbench train ...`
    started for the app; its run folder is found through rank 0's lock, its output is in `log`."""

    process: subprocess.Popen
    log: Path
    started: float
    runs_dir: Path

    def run_dir(self) -> Path | None:
        """The run folder this job's rank 0 holds, once it has one (rank 0 is the launcher's child)."""
        from workbench.core.experiments.runner import run_owned_by

        return run_owned_by(self.runs_dir, self.started, lambda pid: _parent_of(pid) == self.process.pid)

    def failure(self) -> str:
        """The job's own sentence when it ended before training (rank 0's one-line error)."""
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        said = [line.split("workbench: error: ", 1)[1] for line in lines if "workbench: error: " in line]
        code = self.process.poll()
        return said[-1] if said else f"the data-parallel job ended with exit code {code}; its output is in {self.log}"


def _parent_of(pid) -> int | None:
    """The parent process of `pid` (Linux /proc), or None."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, TypeError, IndexError):
        return None


def start_data_parallel(config, devices: int) -> DataParallelJob:
    """Start `config` on `devices` processes through torch.distributed.run (gloo on CPU, nccl on
    CUDA); returns at once. The job outlives the app, like a queue job."""
    from workbench.core.experiments.queue import args_for_config

    runs_dir = Path(config.runs_dir).expanduser()
    logs = runs_dir / ".launch"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(devices),
               "-m", "workbench", "train", *args_for_config(config), "--runs-dir", str(runs_dir)]
    with open(log, "w", encoding="utf-8") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # Ctrl-C in the app's terminal is the app's
    return DataParallelJob(process, log, started, runs_dir)
