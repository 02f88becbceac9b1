"""ArchitectureList: the models to choose from, with parameter counts, filtered by typing."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.markup import escape
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from workbench.core.shown import shown
from workbench.core.catalog import arch_label
from workbench.ui import formatting as fmt
from workbench.ui.workers import Architecture

ADD_FILE = "+file"  # the key of the last row, which adds the user's own network file


class FilterInput(Input):
    """The filter box; down, enter or escape moves on to the list."""

    BINDINGS = [
        Binding("down", "app.focus_next", "to the list", show=False),
        Binding("enter", "app.focus_next", "to the list", show=False),
        Binding("escape", "app.focus_next", "to the list", show=False),
    ]


class ArchitectureTable(DataTable):
    """The list itself. Letters are the app's commands here, so filtering starts with /."""

    BINDINGS = [Binding("slash", "filter", "Filter", tooltip="Type to filter the architectures")]

    def action_filter(self) -> None:
        self.screen.query_one(FilterInput).focus()


class ArchitectureList(Vertical):
    """Shows architectures (name, parameters for the current data set, description).

    The highlighted row is the chosen architecture; moving the cursor reports `Chosen`.
    """

    class Chosen(Message):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class AddFileRequested(Message):
        """Enter on "add a file…": the screen asks for path/to/file.py:factory."""

    def __init__(self, chosen: str, architectures: list[Architecture], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.chosen = chosen
        self.architectures = architectures
        # The user's last own choice (a row picked, a preset, a file added), never a filter's
        # automatic pick: given back when the filter is emptied or matches nothing. A filter only looks.
        self._own_choice = chosen
        self._filtered_for: list[str] = []
        self.params: dict[str, int | None] = {}
        self.shape_text = ""
        self.no_counts = ""  # why no parameters can be counted (a data set that cannot be read)

    def compose(self) -> ComposeResult:
        yield FilterInput(placeholder="/ to filter architectures", id="arch-filter", compact=True)
        yield ArchitectureTable(cursor_type="row", zebra_stripes=True, id="arch-table")
        yield Static("loading architectures…", id="arch-summary")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "architecture"
        table.border_subtitle = "loading PyTorch…"
        table.add_column("architecture", key="name")
        table.add_column("params", key="params", width=6)
        table.add_column("description", key="description")
        self._rebuild()

    # ---- data in ------------------------------------------------------------------

    def set_architectures(self, architectures: list[Architecture]) -> None:
        self.architectures = architectures
        self._rebuild()

    def set_param_count(self, name: str, params: int | None) -> None:
        self.params[name] = params
        table = self.query_one(DataTable)
        if name in table.rows:
            table.update_cell(name, "params", self._params_cell(name))
        if name == self.chosen:
            self._summarize()

    def add_architecture(self, arch: Architecture, params: int | None) -> None:
        """The user's own network joins the list (once) with its count, and becomes the choice."""
        if arch.name not in {a.name for a in self.architectures}:
            self.architectures = [*self.architectures, arch]
        self.params[arch.name] = params
        self.chosen = self._own_choice = arch.name
        self._rebuild()
        self._show_chosen()

    def _show_chosen(self) -> None:
        """A choice made elsewhere (a preset, a file) that the filter hides empties the filter, so
        that the highlighted row is still what trains."""
        field = self.query_one(FilterInput)
        if field.value.strip() and self.chosen not in self.visible_names:
            field.value = ""

    def choose(self, name: str) -> None:
        self.chosen = self._own_choice = name
        self._show_chosen()
        self._move_cursor_to_chosen()
        self._summarize()

    @property
    def visible_names(self) -> list[str]:
        return [str(key.value) for key in self.query_one(DataTable).rows if key.value != ADD_FILE]

    # ---- drawing ------------------------------------------------------------------

    def _rebuild(self) -> None:
        words = self.query_one(FilterInput).value.lower().split()
        table = self.query_one(DataTable)
        with self.prevent(DataTable.RowHighlighted):
            table.clear()
            for arch in self.architectures:
                haystack = f"{arch.name} {arch.description}".lower()
                if all(word in haystack for word in words):
                    table.add_row(
                        Text(shown(arch_label(arch.name)), style="bold"), self._params_cell(arch.name),
                        Text(shown(arch.description)), key=arch.name,
                    )
            table.add_row(Text("add a file…", style="italic"), Text(""),
                          Text("your own network: path/to/file.py:factory (enter)", style="dim"), key=ADD_FILE)
        if self.architectures:
            table.border_subtitle = f"{table.row_count - 1} of {len(self.architectures)}"
        visible = self.visible_names
        typed, self._filtered_for = words != self._filtered_for, words
        if typed:  # the filter's text changed (not a recount): the highlighted row is the chosen one
            pick = visible[0] if words and visible and self._own_choice not in visible else self._own_choice
            if pick != self.chosen:
                self.chosen = pick
                self.post_message(self.Chosen(pick))
        self._move_cursor_to_chosen()
        self._summarize()

    def _move_cursor_to_chosen(self) -> None:
        table = self.query_one(DataTable)
        if self.chosen in table.rows:
            with self.prevent(DataTable.RowHighlighted):
                table.move_cursor(row=table.get_row_index(self.chosen))

    def _params_cell(self, name: str) -> Text:
        if name not in self.params:
            return Text("…", justify="right", style="dim")
        return Text(fmt.compact(self.params[name]), justify="right")  # the exact count: in the summary below

    def _summarize(self) -> None:
        summary = self.query_one("#arch-summary", Static)
        if not self.architectures:
            summary.update("loading architectures…")
            return
        known = self.chosen in {a.name for a in self.architectures}
        if not known:
            summary.update(f"[b]{escape(shown(self.chosen))}[/b] is not an architecture; choose one above")
            return
        typed = self.query_one(FilterInput).value.strip()
        if typed and not self.visible_names:
            summary.update(f"no architecture matches {escape(shown(typed))}; "
                           f"[b]{escape(shown(arch_label(self.chosen)))}[/b] stays chosen (empty the filter to see it)")
            return
        params = self.params.get(self.chosen, None)
        on = f" for {escape(self.shape_text)}" if self.shape_text else ""
        if self.no_counts:
            count, on = "no parameter counts: ", escape(self.no_counts)
        elif params:
            count = f"{params:,} params"
        elif self.chosen in self.params:  # counted as None: it cannot be built for these images
            count, on = "no parameter count: it cannot take ", escape(f"the images of {self.shape_text}")
        else:
            count = "counting parameters…"
        description = next(a.description for a in self.architectures if a.name == self.chosen)
        summary.update(f"[b]{escape(shown(arch_label(self.chosen)))}[/b]: {escape(shown(description))}\n{count}{on}")

    # ---- events -------------------------------------------------------------------

    @on(Input.Changed, "#arch-filter")
    def _filter(self, event: Input.Changed) -> None:
        event.stop()
        self._rebuild()

    @on(DataTable.RowHighlighted, "#arch-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        name = str(event.row_key.value)
        if name == ADD_FILE:
            self.query_one("#arch-summary", Static).update(
                "[b]add a file…[/b]: press enter to train your own network, a Python file with a factory "
                "make_net(in_channels, num_classes, image_size) that returns a torch.nn.Module")
            return
        if name != self.chosen:
            self.chosen = self._own_choice = name
            self._summarize()
            self.post_message(self.Chosen(name))

    @on(DataTable.RowSelected, "#arch-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value == ADD_FILE:
            event.stop()
            self.post_message(self.AddFileRequested())
