"""The layout holds: no import circles in workbench/, no module over 400 lines, one engine, a core
without Textual, an app that paints before torch loads, and tests organised by subject."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines inside `if TYPE_CHECKING:` blocks: imports for annotations only, never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str) -> set[str]:
    """Every workbench module `name` imports, at module level or inside functions."""
    return {target for target in all_imports_of(name) if target in MODULES and target != name}


def all_imports_of(name: str) -> set[str]:
    """Every module `name` imports, ours or not, at module level or inside functions."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from package import module` imports the module; `from module import name` the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found.update(targets)
    return found


def cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    graph = {name: imports_of(name) for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_the_graph_walker_sees_lazy_imports_and_ignores_type_checking_ones():
    assert "workbench.core.training.engine" in imports_of("workbench.headless")
    assert "workbench.core.data.folders" in imports_of("workbench.core.data.load")  # a function-level import
    assert "workbench.ui.app" not in imports_of("workbench.ui.actions")  # only under TYPE_CHECKING


def test_no_import_circles_anywhere_in_workbench():
    assert cycles() == []


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these along their seams: {long}"


def test_there_is_one_training_loop():
    """train_one_epoch is the only place that steps an optimizer during training."""
    stepping = []
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if ".backward()" in text and name.startswith("workbench.core"):
            stepping.append(name)
    assert stepping == ["workbench.core.training.loop"]


def test_core_never_imports_textual_not_even_inside_a_function():
    """Read from the source, so an import inside a function that no test happens to call counts
    too: core imports only core, and nothing in core imports Textual or its charts."""
    core = [name for name in MODULES if name.startswith("workbench.core")]
    assert "workbench.core.training.engine" in core
    outside = {f"{name} imports {target}" for name in core for target in imports_of(name)
               if not target.startswith("workbench.core")}
    assert outside == set()
    ui = {f"{name} imports {target}" for name in [*core, "workbench"] for target in all_imports_of(name)
          if target.startswith(("textual", "plotext"))}  # textual, textual_plotext, plotext
    assert ui == set()


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


# ---- the tests themselves -------------------------------------------------------------------

TESTS = PACKAGE.parent / "tests"
ROUND_NAMES = ("trust", "hostile", "first_hour", "review_round", "round")


def test_no_test_module_imports_another_and_files_are_named_by_subject():
    """Shared helpers live in tests/support/ and fixtures in conftest.py; a test file is named after
    what it tests (data, engine, resume, ui_setup...), not after the review that asked for it."""
    importing = []
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            importing += [f"{path.name} imports {m}" for m in modules
                          if m.split(".")[-1].startswith("test_") or m.endswith("conftest")]
    assert importing == []
    assert [p.name for p in TESTS.glob("test_*.py") if any(word in p.stem for word in ROUND_NAMES)] == []
