"""vxsandbox_js.reads keeps its node_modules walk and the app's text only while the files behind them stay still."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from vxsandbox_js import reads
from vxsandbox_js.reads import app_reads, app_source

OLD = time.time() - 60


def _package(folder: Path, name: str) -> Path:
    package = folder / name
    package.mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"name": name}))
    return package


def _age(*paths: Path) -> None:
    """Make the paths look unchanged for a minute, so their walk is kept."""
    for path in paths:
        os.utime(path, (OLD, OLD))


@pytest.fixture
def app(tmp_path: Path) -> Path:
    app = tmp_path / "app.js"
    app.write_text("require('a');\n")
    modules = tmp_path / "node_modules"
    _package(modules, "a")
    _package(modules / "@scope", "b")
    _age(app, modules, modules / "@scope")
    return app


def _packages(result: reads.AppReads) -> set[str]:
    parents = ("node_modules", "@scope")
    return {os.path.basename(p) for p in result.allow if os.path.basename(os.path.dirname(p)) in parents}


def test_a_settled_walk_is_done_once(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[str] = []
    walk = reads._walk
    monkeypatch.setattr(reads, "_walk", lambda a: walks.append(a) or walk(a))
    first = app_reads(str(app))
    assert app_reads(str(app)) is first
    assert walks == [str(app)]
    assert _packages(first) == {"a", "b"}


def test_a_package_added_later_is_seen(app: Path) -> None:
    assert _packages(app_reads(str(app))) == {"a", "b"}
    _package(app.parent / "node_modules", "c")
    _package(app.parent / "node_modules" / "@scope", "d")
    assert _packages(app_reads(str(app))) == {"a", "b", "c", "d"}


def test_a_node_modules_made_later_in_an_ancestor_is_seen(tmp_path: Path) -> None:
    app = tmp_path / "srv" / "app.js"
    app.parent.mkdir()
    app.write_text("")
    _age(app)
    assert _packages(app_reads(str(app))) == set()
    _package(tmp_path / "node_modules", "up")
    assert _packages(app_reads(str(app))) == {"up"}


def test_a_repointed_release_link_is_seen(tmp_path: Path) -> None:
    for release, package in (("r1", "old"), ("r2", "new")):
        (tmp_path / release).mkdir()
        (tmp_path / release / "app.js").write_text("")
        _package(tmp_path / release / "node_modules", package)
        _age(tmp_path / release / "app.js", tmp_path / release / "node_modules")
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "r1")
    app = str(current / "app.js")
    assert _packages(app_reads(app)) == {"old"}
    current.unlink()
    current.symlink_to(tmp_path / "r2")
    assert _packages(app_reads(app)) == {"new"}


def test_a_walk_of_folders_still_changing_is_not_kept(tmp_path: Path) -> None:
    """A change within the timestamp granularity would leave the folder's time as it was: not trusted."""
    app = tmp_path / "app.js"
    app.write_text("")
    modules = tmp_path / "node_modules"
    _package(modules, "a")
    before = os.stat(modules)
    assert _packages(app_reads(str(app))) == {"a"}
    _package(modules, "b")
    os.utime(modules, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert _packages(app_reads(str(app))) == {"a", "b"}


def test_app_source_follows_edits(tmp_path: Path) -> None:
    path = tmp_path / "app.js"
    path.write_text("var v = 1;")
    _age(path)
    assert app_source(str(path)) == "var v = 1;"
    path.write_text("var v = 2;")
    assert app_source(str(path)) == "var v = 2;"


def test_app_source_of_a_file_still_changing_is_not_kept(tmp_path: Path) -> None:
    """Same size, same mtime (a rewrite within one clock tick): read again, as it was not settled."""
    path = tmp_path / "app.js"
    path.write_text("var v = 1;")
    before = os.stat(path)
    assert app_source(str(path)) == "var v = 1;"
    path.write_text("var v = 2;")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert app_source(str(path)) == "var v = 2;"


def test_a_settled_app_source_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "app.js"
    path.write_text("var v = 1;")
    _age(path)
    first = app_source(str(path))
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("read again"))
    assert app_source(str(path)) is first
