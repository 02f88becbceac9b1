"""TrainStatus: the strip that says where a run is (state, epoch, step, time, speed, device, best)."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from workbench.core.lifecycle.view import ACTIVE, RunView
from workbench.core.shown import shown
from workbench.ui import formatting as fmt

PHASE_STYLES = {
    "waiting": ("◌ waiting", "bold $text-muted"),
    "starting": ("◌ starting", "bold $text-muted"),
    "training": ("▶ training", "bold $success"),
    "paused": ("⏸ paused", "bold $warning"),
    "finished": ("✔ finished", "bold $success"),
    "stopped": ("■ stopped", "bold $warning"),
    "pruned": ("■ pruned", "bold $warning"),
    "failed": ("✖ failed", "bold $error"),
    "interrupted": ("■ interrupted", "bold $error"),
}
BAR_WIDTH = 24


class TrainStatus(Widget):
    """Two lines: state, epoch/step and a progress bar; then time, speed, device and best
    accuracy; a third for the reason a run stopped, failed or was paused from elsewhere."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.view = RunView()
        self.asked = ""  # a request on its way to the trainer ("pausing", "stopping"), until a row answers
        self._lines: tuple = ()

    def show(self, view: RunView, asked: str = "") -> None:
        self.view, self.asked = view, asked
        lines = self._parts()
        if lines != self._lines:
            grew = len([p for p in lines if p == "\n"]) != len([p for p in self._lines if p == "\n"])
            self._lines = lines
            self.refresh(layout=grew)

    @property
    def phase(self) -> str:
        return self.view.phase

    def render(self) -> Content:
        return Content.assemble(*(self._lines or self._parts()))

    def on_resize(self) -> None:
        self._lines = self._parts()  # what fits on the details line depends on the width
        self.refresh()

    def _parts(self) -> tuple:
        view = self.view
        label, style = PHASE_STYLES.get(view.phase, (view.phase, "bold"))
        if self.asked:
            label, style = f"{label} · {self.asked}…", "bold $warning"
        parts: list = [(label, style)]
        if view.epochs:
            parts.append(f"  epoch {max(view.epoch, 1)}/{view.epochs}")
        if view.steps_per_epoch:
            done = int(round(view.progress * BAR_WIDTH))
            parts += [
                f"  step {view.step}/{view.steps_per_epoch}  ",
                ("━" * done, "$accent"),
                ("─" * (BAR_WIDTH - done), "$text-disabled"),
                f" {view.progress * 100:3.0f}%",
            ]
        details = {  # what the details line says, by name (see _LEAVE_OUT_FIRST)
            "phase": shown(view.training_phase.split(" (")[0]) if view.training_phase and view.phase in ACTIVE else "",
            "elapsed": f"elapsed {fmt.duration(view.elapsed_s)}",
            "eta": f"evaluating {'validation' if view.evaluating[0] == 'val' else view.evaluating[0]} "
            f"{view.evaluating[1]:.0%}" if view.evaluating and view.phase == "training" else
            f"ETA {fmt.duration(view.eta_s)}" if view.phase == "training" else "",
            "speed": fmt.rate(view.images_per_s) if view.images_per_s and view.phase == "training" else "",
            "device": shown(view.device_name),
            "memory": f"GPU mem {view.gpu_memory_mb / 1024:.1f} GB" if view.gpu_memory_mb else "",
            "lr": f"lr {view.lr:.3g}" if view.lr is not None else "",
            "best": f"best val {fmt.percent(view.best[0])} (epoch {view.best[1]})" if view.best else "",
            "last": f"last {view.last_held_out[0]} {fmt.percent(view.last_held_out[1])}"
            if view.last_held_out and not view.best else "",
        }
        parts += ["\n", (" · ".join(_fitted(details, self.size.width)), "$text-muted")]
        if view.reason and view.phase in ("failed", "interrupted", "paused", "stopped", "pruned", "finished"):
            colour = "$text-error" if view.phase in ("failed", "interrupted") else "$text-warning"
            parts += ["\n", (shown(view.reason), colour)]
        return tuple(parts)


# Left out of the details line, in this order, when it is wider than the terminal: the device, the
# learning rate, the GPU memory and the speed (the log and the charts have them); never the time or the best.
_LEAVE_OUT_FIRST = ("device", "lr", "memory", "speed", "phase")


def _fitted(details: dict[str, str], width: int) -> list[str]:
    """The details that fit in `width` columns (all of them before the width is known)."""
    kept = {name: text for name, text in details.items() if text}
    for name in _LEAVE_OUT_FIRST:
        if not width or len(" · ".join(kept.values())) <= width:
            break
        kept.pop(name, None)
    return list(kept.values())
