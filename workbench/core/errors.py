"""The one exception type for problems a user can fix, with a one-line message."""


class WorkbenchError(Exception):
    """A problem caused by input the user controls (a flag, a file, a folder).

    Its message is one sentence that says what is wrong and what to do next. The CLI
    prints it and exits with code 2; the TUI shows it on screen. Never raise it for
    bugs: those should keep their traceback.
    """


class StopRequested(Exception):
    """The user asked to stop while long preparation (decoding a folder) was under way.

    Raised from inside that work so it ends within a moment instead of running to completion;
    the engine reports it as a stop before any run began, never as a bug.
    """


def never_stop() -> bool:
    return False
