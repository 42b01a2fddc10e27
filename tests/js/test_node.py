"""Tests for finding Node.js and building the runner's hardening flags (vxsandbox_js.node)."""

from __future__ import annotations

import os

import pytest

from vxsandbox_core.errors import ConfigError
from vxsandbox_js.node import NodeVersion, find_node, hardening_flags, runner_path


def test_permission_flag_by_version() -> None:
    """Node 20-22.12 use --experimental-permission, 22.13+ and 23.5+ use --permission, 18 has none."""
    assert NodeVersion(18, 19, 0).permission_flag is None
    assert NodeVersion(20, 20, 2).permission_flag == "--experimental-permission"
    assert NodeVersion(21, 7, 0).permission_flag == "--experimental-permission"
    assert NodeVersion(22, 12, 0).permission_flag == "--experimental-permission"
    assert NodeVersion(22, 13, 0).permission_flag == "--permission"
    assert NodeVersion(23, 4, 0).permission_flag == "--experimental-permission"
    assert NodeVersion(23, 5, 0).permission_flag == "--permission"
    assert NodeVersion(24, 0, 0).permission_flag == "--permission"


def test_hardening_flags_under_the_permission_model() -> None:
    """The heap bound, the permission flag and one de-duplicated --allow-fs-read per path come first."""
    flags = hardening_flags(NodeVersion(20, 20, 2), 64, True, ["/a/runner.js", "/b/app.js", "/a/runner.js"])
    assert flags == ["--max-old-space-size=64", "--disable-warning=ExperimentalWarning",
                     "--experimental-permission", "--allow-fs-read=/a/runner.js", "--allow-fs-read=/b/app.js"]


def test_hardening_flags_without_permissions() -> None:
    """With permissions off, or on a Node without them, only the heap bound remains."""
    assert hardening_flags(NodeVersion(20, 20, 2), 32, False, ["/x"]) == ["--max-old-space-size=32"]
    assert hardening_flags(NodeVersion(18, 0, 0), None, True, ["/x"]) == []


def test_old_node_20_gets_no_disable_warning_flag() -> None:
    """Node 20 before 20.11 does not know --disable-warning, so it is left out."""
    assert "--disable-warning=ExperimentalWarning" not in hardening_flags(NodeVersion(20, 5, 0), None, True, [])


def test_runner_ships_with_the_package() -> None:
    """The runner script is package data next to the Python modules."""
    path = runner_path()
    assert os.path.isabs(path) and path.endswith("runner.js") and os.path.isfile(path)


def test_explicit_executable_that_is_not_executable() -> None:
    """A configured path that cannot run is a config error naming ``executable``."""
    with pytest.raises(ConfigError, match="executable"):
        find_node("/nonexistent/node")


def test_explicit_program_name_not_on_path() -> None:
    """A configured program name missing from PATH is a config error."""
    with pytest.raises(ConfigError, match="no program named"):
        find_node("no-such-node-binary-xyz")


def test_found_node_is_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    """A node found through a relative PATH entry is returned as an absolute path (the child has no PATH)."""
    fake = os.path.join(str(tmp_path), "node")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(fake, 0o755)
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("PATH", ".")
    assert find_node() == fake
