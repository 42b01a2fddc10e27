"""The built distributions: twine-clean, and working when installed into fresh virtualenvs."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shutil
import subprocess
import venv
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import EXAMPLE, ROOT, Built, Venv

pytestmark = pytest.mark.slow

DISTS = ["vxsandbox", "vxsandbox-core", "vxsandbox-resources-kv", "vxsandbox-resources-http",
         "vxsandbox-resources-log", "vxsandbox-resources-outbound", "vxsandbox-resources-contacts", "vxsandbox-js"]


def write_config(folder: Path, body: str) -> Path:
    """Write a worker config YAML into ``folder`` and return its path."""
    path = folder / "worker.yaml"
    path.write_text(body)
    return path


def resources_table(venv: Venv) -> dict[str, str]:
    """``vxsandbox resources`` from the venv, as {'kind name': distribution}."""
    out = venv.run("vxsandbox", "resources").stdout
    rows = [line.split() for line in out.splitlines()[1:] if line and not line.startswith(" ")]
    return {f"{r[0]} {r[1]}": r[3] for r in rows}


def test_build_dists_passes_twine_check(built: Built) -> None:
    """scripts/build-dists builds an sdist and a wheel of all eight and twine check --strict passes them all."""
    names = sorted(p.name for p in built.folder.iterdir() if p.name.startswith("vxsandbox"))
    assert len(names) == 16, names
    version = (ROOT / "VERSION").read_text().strip()
    for dist in DISTS:
        stem = dist.replace("-", "_")
        assert f"{stem}-{version}.tar.gz" in names, names
        assert built.wheel(dist).exists()
    assert built.output.count("PASSED") == 16, built.output
    assert "FAILED" not in built.output and "WARNING" not in built.output


def test_core_and_kv_only(built: Built, fresh_venv: Venv, tmp_path: Path) -> None:
    """Only vxsandbox-core and vxsandbox-resources-kv installed: the CLI and a kv run work, js is absent."""
    fresh_venv.pip_install(built.wheel("vxsandbox-core"), built.wheel("vxsandbox-resources-kv"))
    installed = fresh_venv.distributions()
    assert {"vxsandbox-core", "vxsandbox-resources-kv"} <= installed
    assert not installed & {"vxsandbox-js", "vxsandbox-resources-http", "vxsandbox-resources-log"}
    table = resources_table(fresh_venv)
    assert table["resource kv"] == "vxsandbox-resources-kv"
    assert table["resource metrics"] == "vxsandbox-core"
    assert table["worker sandbox"] == "vxsandbox-core"
    assert "worker js" not in table
    config = write_config(tmp_path, f"""
transport_name: t
executable: {fresh_venv.python}
args: ["-c", "pass"]
sandbox:
  kv: {{cls: kv, backend: memory}}
""")
    check = fresh_venv.run("vxsandbox", "check", "-c", config)
    assert "resource kv: kv -> vxsandbox_resources_kv" in check.stdout
    missing = fresh_venv.run("vxsandbox", "check", "-c",
                             write_config(tmp_path, "worker: js\ntransport_name: t\n"), check=False)
    assert missing.returncode == 1
    assert "pip install vxsandbox-js" in missing.stderr
    replies = fresh_venv.probe({"kv": {"cls": "kv", "backend": "memory"}},
                               [{"cmd": "kv.set", "key": "k", "value": {"n": 1}}, {"cmd": "kv.get", "key": "k"}])
    assert [r["success"] for r in replies] == [True, True]
    assert replies[1]["value"] == {"n": 1}


def test_everything(built: Built, fresh_venv: Venv, tmp_path: Path) -> None:
    """The meta-distribution with its seven siblings: every plugin is listed and resources answer a real child."""
    fresh_venv.pip_install(*built.wheels())
    assert set(DISTS) <= fresh_venv.distributions()
    table = resources_table(fresh_venv)
    for name, dist in [("resource kv", "vxsandbox-resources-kv"), ("resource http", "vxsandbox-resources-http"),
                       ("resource log", "vxsandbox-resources-log"),
                       ("resource outbound", "vxsandbox-resources-outbound"), ("resource js", "vxsandbox-js"),
                       ("resource contacts", "vxsandbox-resources-contacts"),
                       ("worker js-standalone", "vxsandbox-js"), ("resource config", "vxsandbox-core")]:
        assert table[name] == dist
    replies = fresh_venv.probe(
        {"kv": {"cls": "kv", "backend": "memory"}, "log": {"cls": "log"}, "outbound": {"cls": "outbound"},
         "config": {"cls": "config", "values": {"name": "tea"}}},
        [{"cmd": "kv.incr", "key": "n"}, {"cmd": "log.info", "msg": "hi"}, {"cmd": "config.get", "key": "name"}])
    assert [r["success"] for r in replies] == [True, True, True]
    assert replies[2]["value"] == "tea"
    if shutil.which("node"):
        app = tmp_path / "app.js"
        app.write_text("module.exports = {};\n")
        config = write_config(tmp_path, f"worker: js-standalone\ntransport_name: t\nsandbox_id: s\n"
                                        f"javascript_file: {app}\n")
        assert fresh_venv.run("vxsandbox", "check", "-c", config).stdout.strip().endswith("OK")


def test_example_resource_after_pip_install(built: Built, fresh_venv: Venv) -> None:
    """pip install examples/vxsandbox-resources-example: `cls: time` resolves and answers a real child."""
    fresh_venv.pip_install(built.wheel("vxsandbox-core"), f"{EXAMPLE}[test]")
    assert resources_table(fresh_venv)["resource time"] == "vxsandbox-resources-example"
    replies = fresh_venv.probe({"time": {"cls": "time", "offset_minutes": 60}},
                               [{"cmd": "time.now"}, {"cmd": "time.format", "format": "%Y", "unix": 0}])
    assert replies[0]["success"] is True and replies[0]["offset_minutes"] == 60
    assert replies[1]["text"] == "1970"
    # The example's own test suite passes against the installed distributions.
    result = fresh_venv.run(fresh_venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            EXAMPLE / "tests", check=False, cwd=EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\d+ passed", result.stdout)


def build_dists_module() -> ModuleType:
    """scripts/build-dists, imported as a module."""
    loader = importlib.machinery.SourceFileLoader("build_dists", str(ROOT / "scripts" / "build-dists"))
    spec = importlib.util.spec_from_loader("build_dists", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_build_dists_without_its_tools_says_what_to_do(tmp_path: Path) -> None:
    """Run by a python without build (from a folder holding `make docs`'s build/), it names the fix."""
    (tmp_path / "build" / "site").mkdir(parents=True)
    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False).create(bare)
    proc = subprocess.run([str(bare / "bin" / "python"), str(ROOT / "scripts" / "build-dists"), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "cannot import build, hatchling, twine; run the script with the project's venv" in proc.stderr
    assert "pip install build hatchling twine" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_build_folder_does_not_pass_for_the_build_package(tmp_path: Path) -> None:
    """A build/ folder in the current directory is not taken for the `build` package."""
    (tmp_path / "build" / "site").mkdir(parents=True)
    assert build_dists_module().missing_tools(str(tmp_path)) == []
