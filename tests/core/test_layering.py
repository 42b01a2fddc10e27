"""vxsandbox_core is the bottom layer: no module of it imports another vxsandbox distribution."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "vxsandbox_core" / "src" / "vxsandbox_core"
_IMPORT_FUNCTIONS = {"import_module", "__import__"}


def imported_modules(source: str) -> set[str]:
    """Every absolute module name ``source`` imports: import statements and string arguments of import_module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0]
            if name in _IMPORT_FUNCTIONS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def other_distribution(module: str) -> bool:
    """True for a module of a vxsandbox distribution other than core."""
    top = module.split(".")[0]
    return top.startswith("vxsandbox") and top != "vxsandbox_core"


def test_the_walker_sees_every_kind_of_import() -> None:
    """Plain, from and importlib imports of another distribution are all found; relative ones are core's own."""
    source = ("import vxsandbox_resources_kv\nfrom vxsandbox_js import chat\nfrom . import registry\n"
              "import importlib\nm = importlib.import_module('vxsandbox_js.chat')\n__import__('vxsandbox_x')\n")
    assert sorted(m for m in imported_modules(source) if other_distribution(m)) == [
        "vxsandbox_js", "vxsandbox_js.chat", "vxsandbox_resources_kv", "vxsandbox_x"]


def test_core_imports_no_other_vxsandbox_distribution() -> None:
    """No module of vxsandbox_core imports (or import_module()s) any other vxsandbox distribution."""
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) > 20
    offenders = {str(path.relative_to(CORE)): sorted(m for m in imported_modules(path.read_text(encoding="utf-8"))
                                                     if other_distribution(m))
                 for path in modules}
    assert {k: v for k, v in offenders.items() if v} == {}
