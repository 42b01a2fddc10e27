"""The resource author's toolkit has one home: no distribution re-defines a helper core provides."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = (ROOT / "DISTRIBUTIONS").read_text(encoding="utf-8").split()
#: helpers core owns (aio.default_reactor, config.positive/non_negative, resources.describe_type/describe_field)
CORE_HELPERS = {"default_reactor", "positive", "non_negative", "_positive", "_positive_int", "_non_negative",
                "describe_type", "_describe", "_json_type", "_kind", "describe_field", "_got"}
#: the module of core that defines each helper (config.py unless named here)
HELPER_HOMES = {"default_reactor": "aio.py", "describe_type": "resources.py", "describe_field": "resources.py"}


def sources() -> list[Path]:
    """Every Python source of every distribution and of the example resource."""
    folders = [ROOT / d / "src" for d in DISTRIBUTIONS] + [ROOT / "examples" / "vxsandbox-resources-example" / "src"]
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def test_the_sources_are_found():
    """The walk below sees core's toolkit and the other distributions' resources."""
    names = {p.name for p in sources()}
    assert {"aio.py", "resources.py", "resource.py"} <= names


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_copy_of_a_core_helper(path: Path):
    """Only core's own module defines each toolkit helper; nothing but aio imports the global reactor."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_core = path.is_relative_to(ROOT / "vxsandbox_core")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in CORE_HELPERS:
            home = HELPER_HOMES.get(node.name, "config.py")
            assert in_core and path.name == home, f"{node.name} defined again at line {node.lineno}"
        if isinstance(node, ast.ImportFrom) and node.module == "twisted.internet":
            names = {alias.name for alias in node.names}
            assert "reactor" not in names or path.name in ("aio.py", "cli.py", "service.py") and in_core, \
                f"imports the global reactor at line {node.lineno}; use vxsandbox_core.aio.default_reactor"
        if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name) and node.type.id == "CommandError":
            assert in_core and path.name == "api.py", \
                f"catches CommandError at line {node.lineno}; only SandboxApi (api.py) turns it into a reply"
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "options"
                                                 for t in node.targets):
            value = node.value
            assert not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                        and value.func.attr == "CONFIG_CLASS") or path.name == "resources.py", \
                f"parses CONFIG_CLASS itself at line {node.lineno}; SandboxResource does that"
