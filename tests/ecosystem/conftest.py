"""Fixtures for the ecosystem tests: built distributions shared by every xdist worker, and fresh venvs."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "vxsandbox-resources-example"
#: every distribution's folder (also its import package), from the one list
DISTRIBUTIONS = (ROOT / "DISTRIBUTIONS").read_text(encoding="utf-8").split()


def distribution_name(folder: str) -> str:
    """The distribution a folder builds: ``vxsandbox_resources_kv`` -> ``vxsandbox-resources-kv``."""
    return folder.replace("_", "-")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds distributions or virtualenvs (seconds to a minute each)")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a fresh venv's programs: nothing of this interpreter's own venv or paths."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "VXSANDBOX_PLUGINS")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


@dataclass
class Built:
    """The output of scripts/build-dists: the folder and what the script printed."""

    folder: Path
    output: str

    def wheel(self, dist: str) -> Path:
        """The wheel of ``dist`` (a distribution name such as ``vxsandbox-core``)."""
        (path,) = self.folder.glob(dist.replace("-", "_") + "-*.whl")
        return path

    def wheels(self) -> list[Path]:
        return sorted(self.folder.glob("vxsandbox*.whl"))


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """Run scripts/build-dists once per test session, whichever xdist worker gets there first."""
    shared = tmp_path_factory.getbasetemp().parent
    folder = shared / "dists"
    log = shared / "build-dists.log"
    with open(shared / "build-dists.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not log.exists():
            proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build-dists"), str(folder)],
                                  capture_output=True, text=True, timeout=300)
            result = {"code": proc.returncode, "output": proc.stdout + proc.stderr}
            log.write_text(json.dumps(result))
        result = json.loads(log.read_text())
    assert result["code"] == 0, f"scripts/build-dists failed:\n{result['output']}"
    yield Built(folder, result["output"])


class Venv:
    """A fresh virtualenv (no system site-packages) and ways to run its programs."""

    def __init__(self, path: Path) -> None:
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
        self.path = path
        self.python = path / "bin" / "python"

    def run(self, *args: str | Path, check: bool = True, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``args`` (a program in the venv's bin/ if not a path) and return the finished process."""
        program = str(args[0])
        if "/" not in program:
            program = str(self.path / "bin" / program)
        proc = subprocess.run([program, *map(str, args[1:])], capture_output=True, text=True,
                              timeout=timeout, env=clean_env(), cwd=cwd or self.path)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def pip_install(self, *args: str | Path) -> None:
        """pip install into the venv (downloads come from pip's cache after the first time)."""
        self.run(self.python, "-m", "pip", "install", "-q", *args)

    def distributions(self) -> set[str]:
        """Names of the distributions installed in the venv."""
        proc = self.run(self.python, "-m", "pip", "list", "--format", "json")
        return {d["name"].lower().replace("_", "-") for d in json.loads(proc.stdout)}

    def probe(self, sandbox: dict[str, object], requests: list[dict[str, object]]) -> list[dict[str, object]]:
        """Run a real child through the venv's generic worker; returns the replies the child got."""
        proc = self.run(self.python, Path(__file__).with_name("venv_probe.py"),
                        json.dumps({"sandbox": sandbox, "requests": requests}))
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def fresh_venv(tmp_path: Path) -> Venv:
    """A new, empty virtualenv in the test's temporary folder."""
    return Venv(tmp_path / "venv")
