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

from .conftest import DISTRIBUTIONS, ROOT, distribution_name

PROJECTS = [".", *DISTRIBUTIONS]


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
    assert len(changed) == len(PROJECTS) * 2 - 1  # each __init__.py and sibling pyproject, the root one
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
    """Description, readme, license, classifiers, keywords and project URLs are set for every distribution."""
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


def test_the_meta_distribution_installs_every_distribution() -> None:
    """The root pyproject's dependencies are exactly the distributions listed in DISTRIBUTIONS, pinned."""
    version = (ROOT / "VERSION").read_text().strip()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(deps) == sorted(f"{distribution_name(folder)}=={version}" for folder in DISTRIBUTIONS)


def test_every_distribution_is_a_folder_with_its_tests() -> None:
    """Each line of DISTRIBUTIONS is a folder holding that distribution, its package, and a tests/ folder."""
    assert len(DISTRIBUTIONS) == len(set(DISTRIBUTIONS)) >= 6
    for folder in DISTRIBUTIONS:
        meta = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
        assert meta["name"] == distribution_name(folder)
        assert (ROOT / folder / "src" / folder / "__init__.py").is_file(), folder
        assert (ROOT / "tests" / tox_env(folder)).is_dir(), folder


def tox_env(folder: str) -> str:
    """The tox environment (and tests/ folder) of a distribution folder: ``vxsandbox_js`` -> ``js``."""
    return folder.removeprefix("vxsandbox_")


def test_tox_has_an_environment_per_distribution() -> None:
    """tox.ini's envlist is every distribution of DISTRIBUTIONS, in order, then 'all' (tox cannot read the file)."""
    import configparser
    ini = configparser.ConfigParser()
    ini.read(ROOT / "tox.ini")
    envlist = [e.strip() for e in ini["tox"]["envlist"].split(",")]
    assert envlist == [tox_env(folder) for folder in DISTRIBUTIONS] + ["all"]


def test_ruff_sees_every_distribution() -> None:
    """ruff's first-party source folders cover every distribution's src/."""
    src = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["src"]
    for folder in DISTRIBUTIONS:
        assert any(Path(folder, "src").match(pattern) for pattern in src), folder


def test_makefile_reads_the_one_list() -> None:
    """The Makefile takes its distributions from DISTRIBUTIONS and declares ``test:`` in one rule."""
    text = (ROOT / "Makefile").read_text()
    assert "DISTS := $(shell cat DISTRIBUTIONS)" in text
    # Core is named once, for its [test] extras; no other distribution is named.
    assert not any(folder in text for folder in DISTRIBUTIONS if folder != "vxsandbox_core")
    assert len(re.findall(r"^test:", text, re.M)) == 1
