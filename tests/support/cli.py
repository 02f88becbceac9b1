"""The command line as a user runs it: a real subprocess, or `main` in this process for one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def workbench(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """`workbench ARGS` in a child process, output captured as text."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "workbench", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env,
    )


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI in this process: it must exit 2 with exactly one line on stderr."""
    from workbench.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(err) == 1 and err[0].startswith("workbench: error: "), err
    return err[0]


class Hung(AssertionError):
    """run_here's command did not end within its time: what a user would see as a hang."""


def run_here(*args, cwd=None, within: float = 0) -> subprocess.CompletedProcess:
    """`workbench ARGS` run in this process (from `cwd`), answered as a finished child would be:
    a child spends seconds importing torch. Use `workbench()` where the process itself is tested
    (signals, the console script). `within` seconds cuts a hang (a blocking open of a pipe, say)
    with SIGALRM, which interrupts the blocked call, and fails the test with Hung."""
    import contextlib
    import io
    import signal

    from workbench.cli import main

    def hung(signum, frame):
        raise Hung(f"workbench {' '.join(map(str, args))} did not end within {within:g} s")

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    previous = signal.signal(signal.SIGALRM, hung) if within else None
    if within:
        signal.setitimer(signal.ITIMER_REAL, within)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as done:  # --help: argparse ends the process it thinks it is in
                code = done.code if isinstance(done.code, int) else 0
    finally:
        if within:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        os.chdir(before)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
