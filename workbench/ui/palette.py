"""The command palette's workbench commands: every key's action, presets and architectures."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from workbench.core.presets import PRESETS
from workbench.ui.actions import ACTIONS

if TYPE_CHECKING:
    from workbench.ui.app import WorkbenchApp

class WorkbenchCommands(Provider):
    """Offers what the footer offers on the screen the palette was opened from, plus choices."""

    @property
    def workbench(self) -> WorkbenchApp:
        return self.app  # type: ignore[return-value]

    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = self.workbench
        commands = [  # the app's one table of actions: what the keys run, with the key named
            (action.title, action.help + (f" ({action.keys.split(',')[0]})" if action.keys else ""),
             partial(app.run_action, action.name))
            for action in ACTIONS
            if action.name != "quit" and app.available(action.name, self.screen)
        ]
        commands += self._screen_keys(shown={title for title, _, _ in commands})
        if self.screen is app.setup_screen:
            for name, (description, _) in PRESETS.items():
                commands.append((f"Preset: {name}", description, partial(app.setup_screen.use_preset, name)))
            for arch in app.setup_screen.architectures():
                commands.append(
                    (f"Architecture: {arch.name}", arch.description, partial(app.setup_screen.use_architecture, arch.name))
                )
        return commands

    def _screen_keys(self, shown: set[str]) -> list[tuple[str, str, Callable[[], object]]]:
        """The keys the screen and its focused widget add to the footer (compare, tabs, zoom, ...),
        as the footer shows them: enabled ones only, each once, none named like an app command
        already `shown` (inspect's own Back is the app's Back, for a text field first)."""
        app, found = self.workbench, []
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if active.node is app or not active.enabled or not binding.show or binding.description in shown:
                continue
            shown.add(binding.description)
            key = binding.key_display or app.get_key_display(binding)
            found.append((binding.description, f"{binding.tooltip or binding.description} ({key})",
                          partial(app.run_action, binding.action, active.node)))
        return found

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
