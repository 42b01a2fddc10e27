"""The worker configs shipped next to the examples pass ``vxsandbox check`` and carry what their apps need."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

CONFIGS = sorted((ROOT / "examples").glob("*/*.yaml"))


def test_the_examples_ship_configs() -> None:
    """Both example apps have a worker.yaml."""
    folders = {path.parent.name for path in CONFIGS if path.name == "worker.yaml"}
    assert {"raw_app", "vumigo_app"} <= folders


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_config_checks(path: Path) -> None:
    """``vxsandbox check -c`` run in the example's folder, as its header says, exits 0."""
    done = subprocess.run([sys.executable, "-m", "vxsandbox_core.cli", "check", "-c", path.name], cwd=path.parent,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith(f"{path.name}: OK\n")
    assert "warning" not in done.stderr.lower()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_config_gives_its_app_what_it_needs(path: Path) -> None:
    """require gets an app_context; every kv quota is set with a comment; metrics listen on loopback."""
    text = path.read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    app = (path.parent / config["javascript_file"]).read_text(encoding="utf-8")
    if re.search(r"\brequire\(", app):
        assert config.get("app_context") == "{require: require}"
    if "metrics_port" in config:
        assert config.get("metrics_host") == "127.0.0.1"
    kv = [r for r in config["sandbox"].values() if r["cls"] == "kv"]
    assert kv
    for resource in kv:
        assert {"keys_per_user_hard", "keys_per_user_soft"} <= set(resource)
    for key in ("keys_per_user_hard", "keys_per_user_soft"):
        assert re.search(rf"^\s+{key}: \d+\s+# \S", text, re.M), f"{key} has no comment saying what it means"
