"""NetworkFileScreen: add your own network, a Python file's factory, to the architecture list."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from workbench.core.errors import WorkbenchError
from workbench.ui import workers
from workbench.ui.widgets.footer import FittedFooter

EXAMPLE = """\
def make_net(in_channels, num_classes, image_size):
    return torch.nn.Sequential(...)   # (N, in_channels, size, size) -> (N, num_classes) logits"""


class NetworkFileScreen(ModalScreen[tuple[workers.Architecture, int] | None]):
    """Asks for path/to/file.py:factory and checks it (loaded, built, two blank images through it)
    before it joins the list; a mistake is shown here, naming the file and line, and can be fixed."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, dataset: str, image_size: int) -> None:
        super().__init__(id="network-file")
        self.dataset, self.image_size = dataset, image_size

    def compose(self) -> ComposeResult:
        with Vertical(classes="question"):
            yield Static("[b]Your own network[/b]: a Python file and its factory. Loading it runs its code.",
                         classes="question-text")
            yield Static(escape(EXAMPLE), classes="network-example")
            yield Input(placeholder="path/to/my_nets.py:make_net", id="network-spec")
            yield Static("enter checks and adds it; escape cancels", id="network-status")
        yield FittedFooter()

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted, "#network-spec")
    def _submitted(self, event: Input.Submitted) -> None:
        self.query_one("#network-status", Static).update("checking…")
        self._check(event.value)

    @work(thread=True, exclusive=True, exit_on_error=False, description="checking the network file")
    def _check(self, text: str) -> None:
        try:
            found = workers.check_network_file(text, self.dataset, self.image_size)
        except WorkbenchError as error:
            self.app.call_from_thread(self._show_problem, str(error))
            return
        self.app.call_from_thread(self.dismiss, found)

    def _show_problem(self, problem: str) -> None:
        self.query_one("#network-status", Static).update(f"[red]{escape(problem)}[/red]")
