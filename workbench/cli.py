"""The `workbench` command line: parse arguments, build a RunConfig, run a command or the app.

`workbench` alone (optionally with train options) opens the app; subcommands run headless.
Every user mistake ends in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from workbench.command_table import BY_NAME, epilog
from workbench.core.config import RunConfig
from workbench.core import exit_codes
from workbench.core.errors import WorkbenchError
from workbench.options import add_train_options, config_from_args

EXIT_BAD_INPUT = exit_codes.BAD_INPUT


class UsageError(WorkbenchError):
    """A mistake in the command line itself, said the way argparse words it."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        flag = message.removeprefix("argument ").split(":", 1)[0].split("/")[0] if message.startswith("argument --") else ""
        field = flag.lstrip("-").replace("-", "_") or None  # a parent reading JSON lines learns the setting at fault
        raise UsageError(f"{message} (see {self.prog} --help)", field=field)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="workbench",
        description="Train image classifiers from the keyboard. With no command, opens the app; "
        "training options given here fill in its form, so `s` starts at once.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog(),
    )
    add_train_options(parser)
    return parser


def build_command_parser(command: str) -> OneLineParser:
    parser = OneLineParser(prog=f"workbench {command}")
    BY_NAME[command].add_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from workbench.launch import ANSWER_FLAG, Answer, answering

    argv = list(sys.argv[1:] if argv is None else argv)
    answer = Answer() if answering(argv) else None  # started by a parent process: it reads JSON lines
    typed = argv[1:]  # as typed, for a command that hands them on (train --gpus)
    argv = [argument for argument in argv if argument != ANSWER_FLAG]
    try:
        words = 2 if " ".join(argv[:2]) in BY_NAME else 1  # `sweep join` is a command of two words
        if argv and " ".join(argv[:words]) in BY_NAME:
            name = " ".join(argv[:words])
            args = build_command_parser(name).parse_args(argv[words:])
            args.argv, args.answer = typed[words - 1:], answer
            return BY_NAME[name].runner()(args)
        args = build_parser().parse_args(argv)
        return _open_app(args)
    except WorkbenchError as error:
        print(f"workbench: error: {error}", file=sys.stderr)
        if answer is not None:
            answer.error(str(error), error.field)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return exit_codes.STOPPED


def _open_app(args: argparse.Namespace) -> int:
    given = any(getattr(args, f, None) is not None for f in RunConfig.__dataclass_fields__)
    initial = config_from_args(args) if (given or args.config or args.preset) else None
    from workbench.ui.app import run_app

    return run_app(initial)


def entry() -> None:
    """The `workbench` script and `python -m workbench`: main(), then leave even when someone's
    code (a network's factory) left threads running that would keep the process alive for ever."""
    import os
    import threading

    try:
        code = main()
    except BrokenPipeError:  # `workbench runs | head`: the reader left; what it read was complete lines
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        code = exit_codes.OK
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun rank: its files are closed; C++ teardown of the
        sys.stdout.flush()                  # process group's threads can abort a finished rank, so skip it
        sys.stderr.flush()
        os._exit(code)
    stray = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if stray:
        names = ", ".join(sorted({t.name for t in stray}))[:200]
        print(f"workbench: warning: {len(stray)} thread(s) still running ({names}), started by code that is not "
              "workbench's (a network's factory?); exiting without waiting for them", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
