"""Small screens over the others: confirm quitting, offer to resume a run, ask for more room."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from workbench.ui.widgets.footer import FittedFooter


class Question(ModalScreen[bool]):
    """A yes/no question; y/enter on the focused button answers, n/escape says no."""

    # Shown in the question's own footer: the screen below keeps drawing its keys, which do nothing here.
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str, no: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.question = question
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(classes="question"):
            yield Static(self.question, classes="question-text")
            with Horizontal(classes="question-buttons"):
                yield Button(self.yes, variant="primary", id="yes")
                yield Button(self.no, id="no")
        yield FittedFooter()

    def on_mount(self) -> None:
        self.query_one("#yes").focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


def confirm_quit() -> Question:
    return Question(
        "Training is running.\nStop it (a checkpoint is saved first) and quit?",
        yes="Stop and quit (y)",
        no="Keep training (n)",
        id="confirm-quit",
    )


def offer_resume(name: str, detail: str) -> Question:
    return Question(
        f"Run [b]{escape(name)}[/b] was interrupted ({escape(detail)}).\nResume it from its last checkpoint?",
        yes="Resume (y)",
        no="Not now (n)",
        id="offer-resume",
    )


def confirm_unevaluated_export(name: str, steps: int) -> Question:
    return Question(
        f"Run [b]{escape(name)}[/b] has not been evaluated yet (it stopped after {steps} steps, before an "
        "epoch ended).\nIts accuracy is unknown. Export these weights anyway?",
        yes="Export anyway (y)",
        no="Cancel (n)",
        id="confirm-export",
    )


class TooSmall(ModalScreen[None]):
    """Covers the app while the terminal is below the size it can draw legibly."""

    BINDINGS = [Binding("escape", "ignore", show=False)]

    def __init__(self, need: tuple[int, int]) -> None:
        super().__init__(id="too-small")
        self.need = need

    def compose(self) -> ComposeResult:
        width, height = self.need
        yield Static(
            f"workbench needs a terminal of at least {width}×{height}.\n"
            "Make this window larger; training continues meanwhile. ctrl+q quits.",
            id="too-small-text",
        )

    def action_ignore(self) -> None:
        pass


class TrainOnQuestion(ModalScreen[int | None]):
    """How many epochs a run from the runs list should reach when it trains on; enter starts, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, name: str, status: str, done: int, target: int) -> None:
        super().__init__(id="train-on")
        self.run_name, self.status, self.done, self.target = name, status, done, target

    def compose(self) -> ComposeResult:
        from textual.widgets import Input

        with Vertical(classes="question"):
            yield Static(f"Train [b]{escape(self.run_name)}[/b] on from its last checkpoint ({escape(self.status)}, "
                         f"{self.done} epochs done).\nTrain it to how many epochs in all? (enter starts, escape "
                         "cancels)", classes="question-text")
            yield Input(str(self.target), id="train-on-epochs", type="integer", compact=True)
            yield Static("", id="train-on-error", classes="field-error")
        yield FittedFooter()

    def on_mount(self) -> None:
        self.query_one("#train-on-epochs").focus()

    def on_input_submitted(self, event) -> None:
        try:
            epochs = int(event.value)
        except ValueError:
            epochs = 0
        if epochs <= self.done:
            self.query_one("#train-on-error", Static).update(
                f"give more than the {self.done} epochs it has done (a resume continues to a larger target)")
            return
        self.dismiss(epochs)

    def action_cancel(self) -> None:
        self.dismiss(None)
