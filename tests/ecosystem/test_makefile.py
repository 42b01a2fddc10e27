"""The Makefile's npm step: `npm ci` runs only when an example's package-lock.json changed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT


def dry_run(folder: Path) -> str:
    """What `make npm` would run in ``folder`` (make -n prints the commands instead of running them)."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    proc = subprocess.run(["make", "-n", "npm"], cwd=folder, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_npm_ci_only_when_the_lock_file_changed(tmp_path: Path) -> None:
    """Nothing installed: npm ci; installed from this lock file: nothing; lock file newer: npm ci again."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    app = tmp_path / "examples" / "app"
    app.mkdir(parents=True)
    lock = app / "package-lock.json"
    lock.write_text("{}")
    assert "npm ci --silent --no-audit --no-fund --prefix examples/app" in dry_run(tmp_path)
    stamp = app / "node_modules" / ".package-lock.json"
    stamp.parent.mkdir()
    stamp.write_text("{}")
    os.utime(lock, (1_000_000_000, 1_000_000_000))
    os.utime(stamp, (1_000_000_100, 1_000_000_100))
    assert "npm ci" not in dry_run(tmp_path)
    os.utime(lock, (1_000_000_200, 1_000_000_200))
    assert "npm ci --silent --no-audit --no-fund --prefix examples/app" in dry_run(tmp_path)
