"""Data-parallel training across the processes torchrun starts: who this process is, the process
group, each rank's shard of the data, and the few collectives fit() needs.

torchrun (torch.distributed.run) sets RANK, WORLD_SIZE and LOCAL_RANK in each process it starts.
Without them, or with a world of one, every method here is a no-op and fit() trains exactly as a
plain process does. With them, fit() trains the same model on every rank through
DistributedDataParallel: the global batch (the form's --batch-size) is split evenly over the
ranks, each rank keeps only its shard of the training images on its device, epoch totals and
evaluations are summed over the ranks, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from workbench.core import checkpoint as ckpt
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.core.safe_read import is_regular
from workbench.core.training.control import TrainControl
from workbench.core.training.loop import EvalResult

TIMEOUT_ENV = "WORKBENCH_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300  # a rank silent this long ends the job; epoch-end writes on rank 0 fit well inside
AGREE_EVERY = 10  # steps between the ranks' agreement on stop and pause (one tiny all-reduce)
PAUSE_POLL_S = 0.2

T = TypeVar("T")


class World:
    """This process's place among the training processes, and the collectives between them."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, restart: int = 0, job: str = "") -> None:
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.restart = restart  # torchrun's restart count: > 0 when the job's workers were started again
        self.job = job  # torchrun's run id: the same for every restart of one job
        self.device = torch.device("cpu")  # where collective tensors live (the rank's GPU under nccl)
        self.started = False

    @classmethod
    def from_env(cls, env=os.environ) -> World:
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls()
        try:
            return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       int(env.get("TORCHELASTIC_RESTART_COUNT", 0)), env.get("TORCHELASTIC_RUN_ID", ""))
        except ValueError:
            raise WorkbenchError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers; "
                                 "start data-parallel runs with torchrun") from None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- setting up ---------------------------------------------------------------

    def place(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU (LOCAL_RANK) under CUDA."""
        if not self.distributed:
            return device
        if device.type == "mps":
            raise ConfigError("device", "data-parallel training runs on CUDA GPUs or the CPU, not MPS; use cuda or cpu")
        if device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise ConfigError("device", f"rank {self.rank} wants GPU {self.local_rank} but only "
                                            f"{torch.cuda.device_count()} are visible; start fewer processes per node")
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def start(self, device: torch.device) -> None:
        """Join the process group: nccl between GPUs, gloo on the CPU; a rank that stops answering
        for the timeout ends every rank's collectives with an error instead of a hang."""
        if not self.distributed or self.started:
            return
        if not dist.is_available():
            raise WorkbenchError("this PyTorch build has no torch.distributed; train in one process")
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_from_env(os.environ))
        store = self._attempt_store(timeout)
        dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None,
                                **({"store": store, "rank": self.rank, "world_size": self.size} if store else {}))
        self.device, self.started = device, True

    def _attempt_store(self, timeout: datetime.timedelta):
        """torchrun keeps one store across restarts, and gloo can read a dead attempt's addresses
        from it (seen here: 1 restart in 3 hung, then timed out connecting); keys under each
        attempt's own prefix cannot be stale. None: let init_process_group find the store."""
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in os.environ:
            return None
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), self.size,
                              is_master=False, timeout=timeout)
        return dist.PrefixStore(f"workbench/attempt-{self.restart}", store)

    def close(self) -> None:
        if self.started and dist.is_initialized():
            dist.destroy_process_group()
        self.started = False

    def summary(self, batch_size: int, train_size: int) -> str:
        """One line for the log: how the work is split."""
        backend = dist.get_backend() if self.started else "?"
        return (f"data-parallel: {self.size} processes ({backend}), global batch {batch_size} = {self.size} x "
                f"{batch_size // self.size}, each holding {train_size // self.size:,} of the {train_size:,} training "
                "images; only rank 0 writes the run folder")

    def check_batch(self, batch_size: int) -> int:
        """The per-rank batch of a global batch size, refused when it does not split evenly."""
        if batch_size % self.size:
            raise ConfigError("batch_size", f"{batch_size} is the global batch and must split evenly over "
                                            f"{self.size} processes; use a multiple of {self.size}")
        return batch_size // self.size

    # ---- the data each rank holds ---------------------------------------------------------

    def train_shard(self, count: int, seed: int) -> torch.Tensor | None:
        """This rank's training images: a seeded draw, so every shard mixes the classes, the same
        size on every rank (the last count % size images sit out) so every rank takes as many steps."""
        if not self.distributed:
            return None
        if count < self.size:  # an empty shard trains on nothing: its loss is NaN, never a sentence
            raise WorkbenchError(f"{count:,} training images cannot be split over {self.size} processes (each "
                                 "needs at least one); start fewer processes or give more images")
        drawn = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        return drawn[self.rank :: self.size][: count // self.size].sort().values

    def eval_shard(self, count: int) -> torch.Tensor | None:
        """Every held-out image is evaluated once, by one rank (shards may differ by one)."""
        if self.distributed and 0 < count < self.size:
            raise WorkbenchError(f"{count:,} held-out images cannot be split over {self.size} processes (each "
                                 "needs at least one); start fewer processes or hold out more images")
        return None if not self.distributed else torch.arange(self.rank, count, self.size)

    def epoch_order(self, count: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
        """A shuffle of the shard that every rank draws alike, from the seed and the epoch alone
        (so a resume on any number of ranks needs no saved generator)."""
        generator = torch.Generator(device=device).manual_seed((seed << 20) + epoch)
        return torch.randperm(count, generator=generator, device=device)

    def decorrelate(self, augment_generator: torch.Generator, seed: int, global_step: int) -> None:
        """Ranks other than 0 draw their own augmentation and dropout randomness (rank 0 keeps the
        plain run's, or its checkpoint's)."""
        if self.distributed and not self.is_main:
            stream = (seed << 24) + (self.rank << 40) + global_step
            torch.manual_seed(stream)
            augment_generator.manual_seed(stream + 1)

    # ---- collectives -------------------------------------------------------------------

    def share(self, value: T) -> T:
        """Rank 0's value on every rank (any picklable object; tensors must be on the CPU)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def from_main(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 only (it reads or locks the run folder) and hand its result to every
        rank; a refusal there is raised on every rank, so the whole job ends with its sentence."""
        if not self.distributed:
            return work()
        outcome: Any = None
        if self.is_main:
            try:
                outcome = ("ok", work())
            except WorkbenchError as error:
                self.share(("refused", str(error), error.field))
                raise
        kind, *rest = self.share(outcome)
        if kind == "refused":
            raise WorkbenchError(rest[0], field=rest[1])
        return rest[0]

    def reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """A copy of the tensor summed (or maxed) over the ranks, on its own device (under nccl the
        reduction is queued on the GPU, so the host does not wait for it)."""
        if not self.distributed:
            return tensor
        moved = tensor.to(self.device, copy=True)
        dist.all_reduce(moved, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return moved.to(tensor.device)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module each training step runs: DistributedDataParallel averages the gradients."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def align(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics drift per rank) on every rank, before an evaluation."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer.data, src=0)

    def share_weights(self, model: nn.Module, state: dict[str, torch.Tensor] | None) -> bool:
        """Load rank 0's state dict (read from its checkpoint) into every rank's model; False when
        rank 0 had none."""
        present = self.share(state is not None)
        if not present:
            return False
        if self.is_main:
            model.load_state_dict(state)
        if self.distributed:
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
        return True

    def merge_eval(self, result: EvalResult, shard: torch.Tensor | None) -> EvalResult:
        """One rank's evaluation of its shard -> the whole split's: loss, accuracy and the confusion
        matrix summed exactly over the ranks, per-image results gathered in the split's order."""
        if not self.distributed:
            return result
        count = len(result.positions)
        plain_correct = round(result.plain_acc * count)
        sums = torch.cat([result.confusion.flatten().double(),
                          torch.tensor([float(result.losses.double().sum()), float(plain_correct), float(count)],
                                       dtype=torch.float64)])
        sums = self.reduce(sums)
        classes = result.confusion.shape[0]
        confusion = sums[: classes * classes].round().long().reshape(classes, classes)
        loss_sum, plain_total, total = sums[classes * classes :].tolist()
        pieces: list[Any] = [None] * self.size
        dist.all_gather_object(pieces, (shard[result.positions], result.probs, result.losses))
        positions = torch.cat([piece[0] for piece in pieces])
        order = positions.argsort()
        total = max(total, 1.0)
        return EvalResult(
            split=result.split, loss=loss_sum / total, acc=int(confusion.trace()) / total,
            plain_acc=plain_total / total, confusion=confusion,
            probs=torch.cat([piece[1] for piece in pieces])[order],
            losses=torch.cat([piece[2] for piece in pieces])[order],
            seconds=result.seconds, positions=positions[order],
        )

    def agree(self, control) -> None:
        """At an epoch's end: every rank learns whether any was asked to stop."""
        if isinstance(control, AgreedControl):
            control.agree()

    def agreed(self, control: TrainControl):
        """The control the loop consults: the local one, or one every rank agrees on."""
        return AgreedControl(control, self) if self.distributed else control


class AgreedControl:
    """A TrainControl as all ranks see it. Ctrl-C, SIGTERM or the app reach one rank (or all, at
    slightly different steps); every AGREE_EVERY steps the ranks all-reduce their stop and pause
    switches, so all stop after the same step, and a pause anywhere holds every rank."""

    def __init__(self, local: TrainControl, world: World, every: int = AGREE_EVERY) -> None:
        self.local, self.world, self.every = local, world, every
        self.steps = 0
        self.stopped = False

    def wait_while_paused(self, poll_s: float = PAUSE_POLL_S) -> None:
        """Called by the loop once per step, on every rank alike."""
        self.steps += 1
        if self.steps % self.every == 0:
            self.agree(poll_s)

    def agree(self, poll_s: float = PAUSE_POLL_S) -> None:
        local = self.local
        while True:
            local.poll_file()  # a watcher's pause or stop written to rank 0's run folder
            flags = torch.tensor([float(local.stop_requested), float(local.paused)])
            stop, paused = self.world.reduce(flags, op="max").tolist()
            self.stopped = self.stopped or stop > 0
            if not paused or self.stopped:
                local.report_pause(False)
                return
            local.report_pause(True)
            time.sleep(poll_s)  # paused on some rank: wait together, asking again

    @property
    def stop_requested(self) -> bool:
        return self.stopped

    @property
    def paused(self) -> bool:
        return self.local.paused

    @property
    def paused_s(self) -> float:
        return self.local.paused_s

    @property
    def reason(self) -> str:
        return self.local.reason

    def stop(self, reason: str = "") -> None:
        self.local.stop(reason)


def timeout_from_env(env) -> float:
    """Seconds from WORKBENCH_DIST_TIMEOUT_S (default DEFAULT_TIMEOUT_S), refused in one sentence naming it."""
    raw = env.get(TIMEOUT_ENV)
    if raw is None:
        return float(DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 1 <= seconds <= 7 * 24 * 3600:  # NaN and infinity fail this too
        raise WorkbenchError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds from 1 to 604800 (a week); "
                             f"fix or unset it (default {DEFAULT_TIMEOUT_S})")
    return seconds


def peer_sentence(error: BaseException, world: World, run_dir) -> str:
    """What a collective's failure means to the user, and what to do next."""
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    detail = detail.split("] ", 1)[-1].split(". ")[0][:160]  # drop gloo's source path and its advice
    if run_dir is None:
        saved = "no run folder was written"
    elif any(is_regular(Path(run_dir) / "checkpoints" / name) for name in (ckpt.LAST, ckpt.PREVIOUS, ckpt.BEST)):
        saved = f"the run's last checkpoint is in {run_dir}: resume it with `workbench train --resume {run_dir}`"
    else:  # stopped before its first checkpoint: there is nothing to resume from
        saved = f"{run_dir} holds no checkpoint yet (it stopped before the first was saved); start the run again"
    return f"rank {world.rank}: another process of this {world.size}-process job stopped answering ({detail}); {saved}"


def peer_failure(error: BaseException) -> bool:
    """Whether an exception is a collective that failed because another rank died or hung."""
    if dist.is_available() and isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed", "timed out"))
