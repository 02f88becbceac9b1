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
    assert "workbench.core.training.engine" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"core pulled in {result.stdout.strip()}"


def test_opening_the_app_with_train_flags_does_not_wait_for_torch():
    # The first screen must paint before torch (seconds to import) is loaded, even when
    # flags fill the form: parsing, checking and building the app stay torch-free.
    code = (
        "import sys\n"
        "from workbench.cli import build_parser, config_from_args\n"
        "from workbench.ui.app import build_app\n"
        "args = build_parser().parse_args(['--dataset', 'shapes', '--arch', 'basic_cnn', '--epochs', '1'])\n"
        "build_app(config_from_args(args))\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"torch was imported: {result.stdout.strip()}"
