"""Packaging promises: the README's two commands, CI running the second one verbatim."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (REPO / "README.md").read_text()
    section = text.split("## Fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].startswith("pip install -e .") and commands[0].endswith("workbench")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "workbench", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: workbench" in result.stdout


def test_no_source_file_is_ignored_by_git():
    """A pattern in .gitignore (say an unanchored data/) must never hide a package's own files."""
    import shutil

    if not (REPO / ".git").exists() or shutil.which("git") is None:
        import pytest

        pytest.skip("not a git checkout")
    sources = [str(p.relative_to(REPO)) for p in (REPO / "workbench").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    result = subprocess.run(["git", "check-ignore", "--no-index", *sources], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "", f"ignored by .gitignore: {result.stdout.split()}"


def test_readme_tells_how_to_install_the_cpu_build_and_what_onnx_needs():
    from tests.support.cli import REPO

    readme = (REPO / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
    assert "pip install -e \".[onnx]\"" in readme
