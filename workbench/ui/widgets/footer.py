"""The footer: Textual's, less the keys a narrow terminal has no room for, instead of cutting the
last one mid-word ("q Qu"). Keys that only open another screen leave first, in a fixed order,
then on a very narrow terminal the others from the right, never back and quit; every key still
works, and the command palette (ctrl+p) lists every action."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# Actions that only open another screen: the first to leave a footer that is too narrow.
NAVIGATION = ("images", "inspect", "lr_find", "runs", "dashboard")
KEPT = ("back", "quit")  # always shown: how to leave
PALETTE_WIDTH = 12  # "▏^p palette", docked right


class FittedFooter(Footer):
    def __init__(self) -> None:
        super().__init__(compact=True)
        self._composed_for = 0
        self._composed_keys: tuple | None = None  # None: no keys drawn yet (the bindings were not ready)

    def compose(self) -> ComposeResult:
        room = self.size.width or self.app.size.width
        self._composed_for = room
        self._composed_keys = self._shown_keys() if self._bindings_ready else None
        left_out = self._left_out(room)
        for widget in super().compose():  # lazily: the footer's key groups are built as it yields
            if isinstance(widget, FooterKey) and widget.action in left_out and not widget.has_class("-grouped"):
                continue
            yield widget

    def _shown_keys(self) -> tuple:
        """Everything the footer is drawn from: each active binding (a frozen dataclass: key, label,
        group, display...), whether it works and its tooltip; the palette's key included."""
        return tuple((key, binding, enabled, tooltip)
                     for key, (_, binding, enabled, tooltip) in self.screen.active_bindings.items())

    def bindings_changed(self, screen: Screen) -> None:
        # Textual rebuilds the footer whenever the focus moves, since bindings may follow the focus.
        # A move between the form's fields changes none of the keys shown, and each rebuild made a
        # Tab cost about 0.1 s more.
        self._bindings_ready = True
        if not (screen.app.app_focus and self.is_attached and screen is self.screen):
            return
        if self._shown_keys() != self._composed_keys:
            self.refresh(recompose=True)  # requests made before it runs are one rebuild, on this widget's own queue

    def _left_out(self, room: int) -> set[str]:
        """The actions to leave out so that the rest fits in `room` columns: screen-opening ones
        first, then, on a very narrow terminal, the others from the right; never back or quit."""
        widths: dict[str, int] = {}
        groups: set[str] = set()
        grouped: set[str] = set()  # shown together under one label: never left out one by one
        for _, binding, _, _ in self.screen.active_bindings.values():
            if not binding.show or binding.action in widths:  # one key per action, as the footer shows
                continue
            widths[binding.action] = len(self.app.get_key_display(binding)) + 1
            if binding.group is not None:  # a group's keys share one label ("12345 Tabs")
                grouped.add(binding.action)
                if binding.group.description not in groups:
                    groups.add(binding.group.description)
                    widths[binding.action] += len(binding.group.description) + 1
            elif binding.description:
                widths[binding.action] += len(binding.description) + 1
        spare = room - PALETTE_WIDTH - sum(widths.values())
        last_resort = [action for action in reversed(widths) if action not in (*NAVIGATION, *KEPT, *grouped)]
        left_out: set[str] = set()
        for action in (*NAVIGATION, *last_resort):
            if spare >= 0:
                break
            if action in widths:
                left_out.add(action)
                spare += widths[action]
        return left_out

    def on_resize(self) -> None:
        if self.size.width != self._composed_for:
            self.refresh(recompose=True)
