"""One version for the whole family (VERSION), complete metadata for every distribution, and a CHANGELOG."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import tomllib

from .conftest import ROOT

PROJECTS = ["."] + ["vxsandbox_core", "vxsandbox_resources_kv", "vxsandbox_resources_http",
                    "vxsandbox_resources_log", "vxsandbox_resources_outbound", "vxsandbox_resources_contacts",
                    "vxsandbox_js"]


def bump_version() -> ModuleType:
    """scripts/bump-version, imported as a module."""
    path = ROOT / "scripts" / "bump-version"
    loader = importlib.machinery.SourceFileLoader("bump_version", str(path))
    spec = importlib.util.spec_from_loader("bump_version", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_every_copy_agrees_with_version_file() -> None:
    """Every __version__, the meta-distribution's version and every sibling pin equal VERSION."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bump-version"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    version = (ROOT / "VERSION").read_text().strip()
    import vxsandbox_core
    assert vxsandbox_core.__version__ == version


def test_bump_rewrites_every_copy(tmp_path: Path) -> None:
    """Bumping a copy of the tree changes VERSION, every __version__ and every pin, and nothing disagrees after."""
    module = bump_version()
    for path, _, _ in module.places(ROOT):
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    shutil.copy(ROOT / "VERSION", tmp_path / "VERSION")
    assert module.mismatches(tmp_path, "0.2.0rc1")
    changed = module.write(tmp_path, "0.2.0rc1")
    assert len(changed) == len(PROJECTS) * 2 - 1  # seven __init__.py, seven sibling pyprojects, the root one
    assert module.mismatches(tmp_path, "0.2.0rc1") == []
    assert module.read_version(tmp_path) == "0.2.0rc1"
    root = (tmp_path / "pyproject.toml").read_text()
    assert 'version = "0.2.0rc1"' in root and '"vxsandbox-js==0.2.0rc1"' in root
    # Other pins (twisted>=...) are left alone.
    assert '"treq>=' in (tmp_path / "vxsandbox_resources_http" / "pyproject.toml").read_text()


def test_bad_version_is_refused(tmp_path: Path) -> None:
    """A version that is not a release number is refused before anything is written."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bump-version"), "v1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "not a release version" in proc.stderr


def test_changelog_starts_with_the_current_version() -> None:
    """CHANGELOG.md's newest entry is the version being released."""
    version = (ROOT / "VERSION").read_text().strip()
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings and headings[0] == version


def test_every_distribution_has_complete_metadata() -> None:
    """Description, readme, license, classifiers, keywords and project URLs are set for all eight."""
    for project in PROJECTS:
        meta = tomllib.loads((ROOT / project / "pyproject.toml").read_text())["project"]
        where = f"{project}/pyproject.toml"
        assert meta["name"].startswith("vxsandbox"), where
        assert len(meta["description"]) > 20, where
        assert (ROOT / project / meta["readme"]).is_file(), where
        assert meta["license"] == "BSD-3-Clause", where
        assert any(c.startswith("Development Status") for c in meta["classifiers"]), where
        assert meta["keywords"], where
        assert {"Homepage", "Source", "Changelog", "Documentation"} <= set(meta["urls"]), where
        assert meta["requires-python"] == ">=3.10", where
        dynamic_or_static = meta.get("version") or "version" in meta.get("dynamic", [])
        assert dynamic_or_static, where


def test_every_distribution_ships_the_same_license() -> None:
    """Each distribution folder carries the root LICENSE unchanged (its sdist is built from that folder)."""
    text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause" in text
    for project in PROJECTS[1:]:
        assert (ROOT / project / "LICENSE").read_text() == text, project
