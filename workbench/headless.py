"""`workbench train` without the app: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from workbench.core import exit_codes
from workbench.core.config import RunConfig
from workbench.core.events import (
    CheckpointSaved,
    EpochMetrics,
    Evaluating,
    Event,
    EventSink,
    Failed,
    Finished,
    ImagesSaved,
    Notice,
    PhaseChanged,
    RunStarted,
    StatusChanged,
    StepMetrics,
    to_row,
)
from workbench.core.shown import shown
from workbench.core.training.control import TrainControl, stop_grace_s
from workbench.core.training.distributed import World
from workbench.core.training.engine import fit

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = exit_codes.OK, exit_codes.FAILED, exit_codes.BAD_INPUT
EXIT_STOPPED, EXIT_TERMINATED = exit_codes.STOPPED, exit_codes.TERMINATED


class Abandoned(BaseException):
    """A stop that did not happen in time (stuck in someone's code): unwinds past `except Exception`."""


def _what_is_left(run_dir: Path | None) -> str:
    """What an abandoned run leaves to resume from, in words."""
    if run_dir is None:
        return "no run folder was made yet, so there is nothing to resume"
    if not any((Path(run_dir) / "checkpoints").glob("last*.pt")):
        return f"{shown(run_dir)} has no checkpoint yet, so there is nothing to resume"
    return f"resume it from its last checkpoint with workbench train --resume {shown(run_dir)}"


class HeadlessReporter:
    """Turns engine events into terminal output; remembers how the run ended."""

    def __init__(self, console: Console, interactive: bool, speaks: bool = True) -> None:
        self.console = console
        self.interactive = interactive
        self.speaks = speaks  # False on torchrun's ranks other than 0: only their own failures are printed
        self.progress: Progress | None = None
        self.task = None
        self.exit_code = EXIT_FAILED
        self.run_dir: Path | None = None
        self.steps_per_epoch = 1

    def __call__(self, event: Event) -> None:
        handler = getattr(self, "on_" + type(event).__name__, None)
        if handler is not None:
            handler(event)

    def on_RunStarted(self, event: RunStarted) -> None:
        self.run_dir = event.run_dir
        self.steps_per_epoch = event.steps_per_epoch
        resumed = f", resuming after epoch {event.start_epoch}" if event.start_epoch else ""
        val = f" / {event.val_size:,} validation" if event.val_size else ""
        self.console.print(
            shown(f"run {event.run_dir} | {event.arch} ({event.params:,} params) on {event.device_name}"
                  f" | {event.train_size:,} train{val} / {event.test_size:,} test images{resumed}"),
            highlight=False, markup=False,
        )
        if self.interactive:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("loss {task.fields[loss]} acc {task.fields[acc]} | {task.fields[speed]}"),
                TextColumn("{task.fields[elapsed]} ETA {task.fields[eta]}"),  # the engine's clock: pauses excluded
                console=self.console,
                transient=True,  # the epoch lines and the summary stay; the bar leaves with the run
            )
            total = event.epochs * event.steps_per_epoch
            self.task = self.progress.add_task(
                "train", total=total, completed=event.start_epoch * event.steps_per_epoch,
                epoch=event.start_epoch + 1, epochs=event.epochs, loss="-", acc="-", speed="-",
                elapsed=clock(0), eta="-",
            )
            self.progress.start()

    def on_StepMetrics(self, event: StepMetrics) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=(event.epoch - 1) * event.steps_per_epoch + event.step,
                epoch=event.epoch,
                loss=f"{event.loss:.3f}",
                acc=f"{event.acc:.1%}",
                speed=f"{event.images_per_s:,.0f} img/s",
                elapsed=clock(event.elapsed_s),
                eta=clock(event.eta_s),
            )

    def on_Evaluating(self, event: Evaluating) -> None:
        if self.progress is not None:
            split = "validation" if event.split == "val" else event.split
            self.progress.update(self.task, eta=f"- (evaluating {split}: {event.images_done:,}/{event.images:,})")

    def on_EpochMetrics(self, event: EpochMetrics) -> None:
        self._print(epoch_line(event))
        if self.progress is not None:
            self.progress.update(self.task, completed=event.epoch * self.steps_per_epoch)

    def on_Notice(self, event: Notice) -> None:
        prefix = "warning: " if event.level == "warning" else ""
        self._print(prefix + shown(event.message))

    def on_PhaseChanged(self, event: PhaseChanged) -> None:
        self._print(f"epoch {event.epoch} on: {shown(event.phase)}")

    def on_StatusChanged(self, event: StatusChanged) -> None:
        if event.status == "paused":
            control = self.run_dir / "control" if self.run_dir else "RUN/control"
            self._print(f"paused{': ' + event.reason if event.reason else ''}. The clock stops until it goes on: "
                        f"p in `workbench watch`, or echo run > {control}")
            if self.progress is not None:
                self.progress.update(self.task, speed="paused", eta="-")
        elif event.status == "running":
            self._print("going on")

    def on_CheckpointSaved(self, event: CheckpointSaved) -> None:
        pass  # one line per epoch is enough; the run folder has them all

    def on_ImagesSaved(self, event: ImagesSaved) -> None:
        if event.paths:
            self._print(f"images: {len(event.paths)} files in {shown(event.paths[0].parent)}")

    def on_Finished(self, event: Finished) -> None:
        self._stop_progress()
        if event.status in ("finished", "pruned"):  # a pruned trial ended as its search decided
            self.exit_code = EXIT_OK
        else:
            self.exit_code = EXIT_TERMINATED if event.reason == "SIGTERM" else EXIT_STOPPED
        if event.run_dir is None:
            self.console.print("stopped while preparing the data set: no run was started", highlight=False, markup=False)
            return
        self.console.print(finish_line(event), highlight=False, markup=False)

    def on_Failed(self, event: Failed) -> None:
        self._stop_progress()
        self.exit_code = EXIT_BAD_INPUT if event.bad_input else EXIT_FAILED
        if self.speaks or not event.bad_input:  # bad input is the same on every rank: rank 0 says it
            print(f"workbench: error: {event.reason}", file=sys.stderr, flush=True)

    def _print(self, line: str) -> None:
        target = self.progress.console if self.progress is not None else self.console
        target.print(line, highlight=False, markup=False)

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def clock(seconds: float | None) -> str:
    """0:01:05, as rich's own columns show time; '-' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def epoch_line(event: EpochMetrics) -> str:
    """One epoch in words; every held-out figure names its split."""
    parts = [f"epoch {event.epoch}/{event.epochs}",
             f"train loss {event.train_loss:.4f} acc {event.train_acc:.2%}"]
    if event.val_acc is not None:
        parts.append(f"val loss {event.val_loss:.4f} acc {event.val_acc:.2%}")
    if event.test_acc is not None:
        parts.append(f"test loss {event.test_loss:.4f} acc {event.test_acc:.2%}")
    if not event.evaluated:
        parts.append("not evaluated this epoch")
    if event.best_epoch is not None:
        parts.append(f"best val {event.best_val_acc:.2%} (epoch {event.best_epoch})")
    parts.append(f"lr {event.lr:.3g}  {event.images_per_s:,.0f} img/s  {event.epoch_s:.1f} s")
    return shown("  ".join(parts))


def finish_line(event: Finished) -> str:
    saved = "" if event.status == "finished" else " (checkpoint saved)"
    return shown(f"{event.summary()}{saved}; {event.elapsed_s:.1f} s -> {event.run_dir}")


def train_headless(config: RunConfig, resume_dir: Path | None = None, also: EventSink | None = None,
                   answer=None, run_id: str = "", pruner=None) -> int:
    """Run fit() in this thread; Ctrl-C or SIGTERM asks for a clean stop, a second Ctrl-C aborts.
    `also` receives every event after the terminal output (e.g. to notify when the run ends);
    `answer` (launch.Answer, for a parent process) gets every event as its row, and the words
    for people go to stderr."""
    speaks = World.from_env().is_main  # under torchrun, rank 0 reports for the whole job
    console = Console(soft_wrap=True, quiet=not speaks, file=sys.stderr if answer is not None else None)
    interactive = speaks and answer is None and console.is_terminal and sys.stdout.isatty()
    reporter = HeadlessReporter(console, interactive=interactive, speaks=speaks)
    sinks = [reporter, *([also] if also is not None else []),
             *([lambda event: answer.row(to_row(event))] if answer is not None and speaks else [])]
    sink = reporter if len(sinks) == 1 else (lambda event: [each(event) for each in sinks])
    fit_stopping_on_signals(config, reporter, console, TrainControl(), resume_dir, events=sink, run_id=run_id,
                            pruner=pruner)
    return reporter.exit_code


def fit_stopping_on_signals(config: RunConfig, reporter: HeadlessReporter, console: Console,
                            control: TrainControl, resume_dir: Path | None = None, events=None,
                            data=None, run_id: str = "", pruner=None) -> Path | None:
    """fit() with Ctrl-C and SIGTERM turned into a stop after the current step (a checkpoint is
    saved); a second Ctrl-C aborts. `events` (default: the reporter) receives the run's events;
    `data` is a data set already loaded for it (see fit)."""

    grace = stop_grace_s()
    asked: list[str] = []

    def on_interrupt(signum, frame):
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        if control.stop_requested:  # asked twice: abort now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise Abandoned(f"{name} again: abandoned the run without waiting for its step")
        asked.append(name)
        what = "stopping after this step and saving a checkpoint" if reporter.run_dir else "stopping"
        console.print(f"{name}: {what}" + (" (Ctrl-C again to abort)" if signum == signal.SIGINT else ""))
        control.stop(reason="SIGTERM" if signum == signal.SIGTERM else "")
        signal.setitimer(signal.ITIMER_REAL, grace)  # a stop that never comes (someone's code in a loop) ends here

    def on_alarm(signum, frame):
        raise Abandoned(f"the run did not stop within {grace:g} s of {asked[-1]} (stuck in a network's own "
                        f"code?); abandoned without saving: {_what_is_left(reporter.run_dir)}")

    previous = {sig: signal.signal(sig, on_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, on_alarm)
    try:
        return fit(config, events or reporter, control, resume_dir=resume_dir, data=data, run_id=run_id, pruner=pruner)
    except Abandoned as abandoned:
        print(f"workbench: error: {abandoned}", file=sys.stderr, flush=True)
        reporter.exit_code = EXIT_TERMINATED if asked[-1:] == ["SIGTERM"] else EXIT_STOPPED
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reporter._stop_progress()
