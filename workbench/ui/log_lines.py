"""The dashboard log's words for each event of a run (Rich markup; every value from a file escaped)."""

from __future__ import annotations

from rich.markup import escape as escape_markup

from workbench.core.events import (
    CheckpointSaved,
    EpochMetrics,
    Event,
    Failed,
    Finished,
    ImagesSaved,
    Notice,
    PhaseChanged,
    RunStarted,
    StatusChanged,
)
from workbench.core.shown import shown
from workbench.core.wording import count as counted
from workbench.ui import formatting as fmt


def escape(text: object) -> str:
    """A value from the run's files as literal text: control characters visible, markup escaped."""
    return escape_markup(shown(text))


def log_line(event: Event) -> str | None:
    """One log line for an event, or None for events the log does not show."""
    words = _WORDS.get(type(event))
    return words(event) if words is not None else None


def _started(event: RunStarted) -> str:
    resumed = f", resuming after epoch {event.start_epoch}" if event.start_epoch or event.start_step else ""
    val = f" / {event.val_size:,} val" if event.val_size else ""
    return (f"run [b]{escape(event.run_dir.name)}[/b]: {escape(event.arch)} ({event.params:,} params) on "
            f"{escape(event.device_name)} · {escape(event.dataset)}: {event.train_size:,} train{val} / "
            f"{event.test_size:,} test images, {counted(len(event.classes), 'class')}, "
            f"{counted(event.epochs, 'epoch')} of {event.steps_per_epoch:,} steps, batch {event.batch_size}{resumed}")


def _epoch(epoch: EpochMetrics) -> str:
    parts = [f"train loss {_loss(epoch.train_loss)} acc {fmt.percent(epoch.train_acc)}"]
    if epoch.val_acc is not None:
        best = " [b green]best so far[/]" if epoch.best_epoch == epoch.epoch else ""
        parts.append(f"val loss {_loss(epoch.val_loss)} acc [b]{fmt.percent(epoch.val_acc)}[/b]{best}")
    if epoch.test_acc is not None:
        parts.append(f"test loss {_loss(epoch.test_loss)} acc [b]{fmt.percent(epoch.test_acc)}[/b]")
    if not epoch.evaluated:
        parts.append("[dim]not evaluated this epoch[/]")
    parts += [fmt.duration(epoch.epoch_s), fmt.rate(epoch.images_per_s)]
    best = max(epoch.per_class_acc.values(), default=0.0)
    # the two lowest classes, never one as good as the best (two classes at 100% are no one's weakest)
    weakest = [item for item in sorted(epoch.per_class_acc.items(), key=lambda item: item[1])[:2] if item[1] < best]
    if weakest:
        parts.append("weakest: " + ", ".join(f"{escape(name)} {fmt.percent(acc, 0)}" for name, acc in weakest))
    return f"epoch {epoch.epoch}/{epoch.epochs}: " + " · ".join(parts)


def _loss(value: float | None) -> str:
    """0.412, and 1.2e-05 for a loss that 0.000 would hide."""
    if value is None:
        return "-"
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2g}"


def _checkpoint(event: CheckpointSaved) -> str:
    best = " · new best" if event.best else ""
    where = f"in epoch {event.epoch + 1}, after step {event.epoch_step}" if event.epoch_step else f"epoch {event.epoch}"
    return f"[dim]checkpoint {escape(event.path.name)} saved ({where}{best})[/]"


def _images(event: ImagesSaved) -> str:
    return f"images saved: {escape(', '.join(path.name for path in event.paths))} · [b]i[/b] opens the gallery"


def _notice(event: Notice) -> str:
    if event.level == "warning":
        return f"[yellow]warning: {escape(event.message)}[/]"
    return f"[dim]{escape(event.message)}[/]"


def _status(event: StatusChanged) -> str:
    if event.status == "paused":
        return "[b yellow]paused[/]" + (f": {escape(event.reason)}" if event.reason else "")
    if event.status == "running":
        return "[b]going on[/]"
    return f"[b red]{escape(event.status)}:[/] {escape(event.reason)}"


def _phase(event: PhaseChanged) -> str:
    return f"[b]epoch {event.epoch} on: {escape(event.phase)}[/b]"


def _finished(event: Finished) -> str:
    if event.run_dir is None:
        return "[b]stopped while preparing the data set[/b]: no run was started"
    hint = " · [b]e[/b] exports the model, [b]i[/b] shows images" if event.evaluated else ""
    return f"[b]{escape(event.summary())}[/b]{hint}"


def _failed(event: Failed) -> str:
    return f"[b red]training failed:[/] {escape(event.reason)}"


_WORDS = {
    RunStarted: _started, EpochMetrics: _epoch, CheckpointSaved: _checkpoint, ImagesSaved: _images,
    Notice: _notice, StatusChanged: _status, PhaseChanged: _phase, Finished: _finished, Failed: _failed,
}
