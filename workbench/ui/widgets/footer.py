"""The footer: Textual's, less the keys a narrow terminal has no room for, instead of cutting the
last one mid-word ("q Qu"). Keys that only open another screen leave first, in a fixed order;
they still work, and the command palette (ctrl+p) lists every action."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# Actions that only open another screen: the first to leave a footer that is too narrow.
NAVIGATION = ("images", "inspect", "lr_find", "runs", "dashboard")
PALETTE_WIDTH = 12  # "▏^p palette", docked right


class FittedFooter(Footer):
    def __init__(self) -> None:
        super().__init__(compact=True)
        self._composed_for = 0

    def compose(self) -> ComposeResult:
        room = self.size.width or self.app.size.width
        self._composed_for = room
        left_out = self._left_out(room)
        for widget in super().compose():  # lazily: the footer's key groups are built as it yields
            if isinstance(widget, FooterKey) and widget.action in left_out and not widget.has_class("-grouped"):
                continue
            yield widget

    def _left_out(self, room: int) -> set[str]:
        """The navigation actions to leave out so that the rest fits in `room` columns."""
        widths: dict[str, int] = {}
        for _, binding, _, _ in self.screen.active_bindings.values():
            if binding.show and binding.action not in widths:  # one key per action, as the footer shows
                label = binding.description or (binding.group.description if binding.group else "")
                widths[binding.action] = len(self.app.get_key_display(binding)) + 1 + len(label) + 1
        spare = room - PALETTE_WIDTH - sum(widths.values())
        left_out: set[str] = set()
        for action in NAVIGATION:
            if spare >= 0:
                break
            if action in widths:
                left_out.add(action)
                spare += widths[action]
        return left_out

    def on_resize(self) -> None:
        if self.size.width != self._composed_for:
            self.call_after_refresh(self.recompose)
