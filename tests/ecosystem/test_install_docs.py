"""The install commands README.md gives work as written: from a clone, and from the wheels build-dists makes."""

from __future__ import annotations

import re
import shlex

import pytest

import vxsandbox_core

from .conftest import ROOT, Built, Venv

pytestmark = pytest.mark.slow


def install_commands() -> dict[str, list[str]]:
    """The README's install commands, by the comment above each: {'clone': argv, 'wheels': ..., 'pypi': ...}."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- install-commands -->", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = {}
    comment = ""
    for line in block.splitlines():
        if line.startswith("#"):
            comment = line
        elif line.strip():
            key = next(k for k in ("clone", "wheels", "PyPI") if k in comment)
            commands[key.lower()] = shlex.split(line)
    return commands


def test_readme_and_getting_started_agree() -> None:
    """Getting started gives the README's clone and wheel commands word for word."""
    page = (ROOT / "docs" / "src" / "getting-started.md").read_text(encoding="utf-8")
    commands = install_commands()
    assert set(commands) == {"clone", "wheels", "pypi"}
    for key in ("clone", "wheels"):
        assert shlex.join(commands[key]) in page


def assert_installed(venv: Venv) -> None:
    """Every distribution is there at this version, and the command works."""
    version = venv.run("vxsandbox", "--version").stdout.strip()
    assert version == f"vxsandbox-core {vxsandbox_core.__version__}"
    assert {"vxsandbox", "vxsandbox-core", "vxsandbox-js", "vxsandbox-resources-kv"} <= venv.distributions()
    resources = venv.run("vxsandbox", "resources").stdout
    assert re.search(r"^worker\s+js-standalone\s", resources, re.M), resources


def test_install_from_a_clone(fresh_venv: Venv) -> None:
    """The clone command, run at the repository's root, installs all seven."""
    argv = install_commands()["clone"]
    assert argv[:2] == ["pip", "install"]
    fresh_venv.run(fresh_venv.python, "-m", "pip", "install", "-q", *argv[2:], cwd=ROOT, timeout=600)
    assert_installed(fresh_venv)


def test_install_from_the_wheels(built: Built, fresh_venv: Venv) -> None:
    """The wheels command picks this 1.0.0 over PyPI's Python 2 vxsandbox 0.6.1."""
    argv = install_commands()["wheels"]
    assert argv == ["pip", "install", "--find-links", "dist", "vxsandbox"]
    fresh_venv.run(fresh_venv.python, "-m", "pip", "install", "-q", "--find-links", built.folder, "vxsandbox",
                   timeout=600)
    assert_installed(fresh_venv)
