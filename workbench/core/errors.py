"""The exceptions for problems a user can fix, each carrying what a caller needs without parsing text."""

from __future__ import annotations

from workbench.core.shown import shown


class WorkbenchError(Exception):
    """A problem caused by input the user controls (a flag, a file, a folder).

    Its message is one sentence that says what is wrong and what to do next. The CLI
    prints it and exits with code 2; the TUI shows it on screen. Never raise it for
    bugs: those should keep their traceback. `field` names the RunConfig setting the
    problem concerns, when there is one, so a form can mark that field.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        # Messages quote file contents and names: wherever one is shown (stderr, the app, JSON
        # lines), a control character in it is a visible escape, never a terminal command.
        super().__init__(shown(message))
        self.field = field


class ConfigError(WorkbenchError):
    """A setting with a bad value. `problem` is the sentence without the setting's name,
    for a form that shows it beside the field's own label; str() starts with the CLI flag."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{flag(field)}: {problem}", field=field)
        self.problem = shown(problem)


class UnsafeFile(WorkbenchError):
    """A file that could run code when loaded (a pickle naming callables) was refused."""


class RunBusy(WorkbenchError):
    """Another process owns the run folder (it is training into it)."""


class StopRequested(Exception):
    """The user asked to stop while long preparation (decoding a folder) was under way.

    Raised from inside that work so it ends within a moment instead of running to completion;
    the engine reports it as a stop before any run began, never as a bug.
    """


def flag(field: str) -> str:
    """The command-line flag of a RunConfig field: batch_size -> --batch-size."""
    return "--" + field.replace("_", "-")


def never_stop() -> bool:
    return False


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; training cannot go on from these weights."""
