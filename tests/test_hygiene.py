"""Import hygiene: the core never imports Textual, and neither does the headless CLI path."""

import pkgutil
import subprocess
import sys

import workbench.core


def core_modules():
    prefix = workbench.core.__name__ + "."
    return sorted(m.name for m in pkgutil.walk_packages(workbench.core.__path__, prefix))


def test_core_modules_do_not_import_textual():
    modules = core_modules()
    assert "workbench.core.engine" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"core pulled in {result.stdout.strip()}"
