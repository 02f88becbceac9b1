"""The command line as a user runs it: a real subprocess, or `main` in this process for one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def workbench(*args, cwd=None, timeout=300, path=None) -> subprocess.CompletedProcess:
    """`workbench ARGS` in a child process, output captured as text."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"PATH": path} if path else {})}
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


def run_here(*args, cwd=None) -> subprocess.CompletedProcess:
    """`workbench ARGS` run in this process (from `cwd`), answered as a finished child would be:
    a child spends seconds importing torch. Use `workbench()` where the process itself is tested
    (signals, a hang cut by a timeout, the console script)."""
    import contextlib
    import io

    from workbench.cli import main

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as done:  # --help: argparse ends the process it thinks it is in
                code = done.code if isinstance(done.code, int) else 0
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
