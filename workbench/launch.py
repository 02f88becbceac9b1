"""`workbench train --gpus N`: the same training, one process per GPU, started by PyTorch's own
launcher (torch.distributed.run, which is what the `torchrun` command runs), never a home-made one.

It is exactly `torchrun --standalone --nproc-per-node N -m workbench train ...` with the other
flags as given; use torchrun itself for several machines (--nnodes, --rdzv-endpoint) or for
restarts after a failure (--max-restarts).
"""

from __future__ import annotations

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
