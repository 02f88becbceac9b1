"""TrainStatus: the strip that says where a run is (epoch, step, time, speed, device, state)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from workbench.ui import formatting as fmt

PHASE_STYLES = {
    "starting": ("◌ starting", "bold $text-muted"),
    "training": ("▶ training", "bold $success"),
    "paused": ("⏸ paused", "bold $warning"),
    "stopping": ("■ stopping", "bold $warning"),
    "finished": ("✔ finished", "bold $success"),
    "stopped": ("■ stopped", "bold $warning"),
    "failed": ("✖ failed", "bold $error"),
}
BAR_WIDTH = 24


@dataclass(frozen=True)
class RunState:
    """What the strip shows; the dashboard replaces it as events arrive."""

    phase: str = "starting"
    run_name: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    elapsed_s: float | None = None
    eta_s: float | None = None
    images_per_s: float | None = None
    device_name: str = ""
    gpu_memory_mb: float | None = None
    lr: float | None = None
    best: tuple[float, int] | None = None  # (validation accuracy, epoch) of the best epoch so far
    last_held_out: tuple[str, float] | None = None  # (split, accuracy) of the last evaluation
    reason: str = ""  # why it failed

    @property
    def progress(self) -> float:
        total = self.epochs * self.steps_per_epoch
        if not total:
            return 0.0
        return min(((self.epoch - 1) * self.steps_per_epoch + self.step) / total, 1.0)


class TrainStatus(Widget):
    """Two lines: phase, epoch/step and a progress bar; then time, speed, device and best accuracy."""

    state: reactive[RunState] = reactive(RunState)

    def watch_state(self, old: RunState, new: RunState) -> None:
        if bool(old.reason) != bool(new.reason) or old.phase != new.phase:
            self.refresh(layout=True)  # the strip may have grown or shrunk a line

    def render(self) -> Content:
        state = self.state
        label, style = PHASE_STYLES.get(state.phase, (state.phase, "bold"))
        parts: list[str | tuple[str, str]] = [(label, style)]
        if state.epochs:
            parts.append(f"  epoch {state.epoch}/{state.epochs}")
        if state.steps_per_epoch:
            done = int(round(state.progress * BAR_WIDTH))
            parts += [
                f"  step {state.step}/{state.steps_per_epoch}  ",
                ("━" * done, "$accent"),
                ("─" * (BAR_WIDTH - done), "$text-disabled"),
                f" {state.progress * 100:3.0f}%",
            ]
        details = [
            f"elapsed {fmt.duration(state.elapsed_s)}",
            f"ETA {fmt.duration(state.eta_s)}" if state.phase in ("training", "paused") else "",
            fmt.rate(state.images_per_s) if state.images_per_s else "",
            state.device_name,
            f"GPU mem {state.gpu_memory_mb / 1024:.1f} GB" if state.gpu_memory_mb else "",
            f"lr {state.lr:.3g}" if state.lr is not None else "",
            f"best val {fmt.percent(state.best[0])} (epoch {state.best[1]})" if state.best else "",
            f"last {state.last_held_out[0]} {fmt.percent(state.last_held_out[1])}"
            if state.last_held_out and not state.best else "",
        ]
        parts += ["\n", (" · ".join(part for part in details if part), "$text-muted")]
        if state.reason:
            parts += ["\n", (state.reason, "$text-error")]
        return Content.assemble(*parts)
