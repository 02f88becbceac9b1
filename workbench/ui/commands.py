"""The command palette's workbench commands: every key's action, presets and architectures."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from workbench.core.presets import PRESETS

if TYPE_CHECKING:
    from workbench.ui.app import WorkbenchApp

# (action, title, help): the same actions the keys run.
ACTIONS = (
    ("start", "Start training", "Train with the form's values (s)"),
    ("pause", "Pause training", "Pause the run after this step (p)"),
    ("resume", "Resume training", "Go on training the paused run (p)"),
    ("stop", "Stop training", "Finish the current step, save a checkpoint and stop (x)"),
    ("export", "Export the run", "Write safetensors + torch.export files and verify them (e)"),
    ("lr_find", "Find a learning rate", "The LR range test on the form's run; enter takes its suggestion (l)"),
    ("batch_find", "Find the largest batch size", "Double the batch until it no longer fits in GPU memory"),
    ("images", "Show images", "The run's inspection PNGs with a preview (i)"),
    ("inspect", "Inspect the run", "Confusion matrix, per-class accuracy, model, data, predict (v)"),
    ("runs", "Show runs", "Past runs in the runs folder (r)"),
    ("dashboard", "Show the dashboard", "Back to the live training dashboard (d)"),
    ("back", "Back", "Close this screen (escape)"),
)


class WorkbenchCommands(Provider):
    """Offers what the footer offers on the screen the palette was opened from, plus choices."""

    @property
    def workbench(self) -> WorkbenchApp:
        return self.app  # type: ignore[return-value]

    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = self.workbench
        commands = [
            (title, help_text, partial(app.run_action, action))
            for action, title, help_text in ACTIONS
            if app.available(action, self.screen)
        ]
        if self.screen is app.setup_screen:
            for name, (description, _) in PRESETS.items():
                commands.append((f"Preset: {name}", description, partial(app.setup_screen.use_preset, name)))
            for arch in app.setup_screen.architectures():
                commands.append(
                    (f"Architecture: {arch.name}", arch.description, partial(app.setup_screen.use_architecture, arch.name))
                )
        return commands

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            if not title.startswith("Architecture:"):
                yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
