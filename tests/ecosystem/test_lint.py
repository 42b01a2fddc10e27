"""`make lint` (run by CI) type-checks every distribution with mypy, strictly enough that a type error fails it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


def test_lint_type_checks_every_distribution() -> None:
    """The lint recipe runs mypy on the src/ of every folder DISTRIBUTIONS lists, and CI runs the recipe."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    proc = subprocess.run(["make", "-n", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    mypy_lines = [line.split() for line in proc.stdout.splitlines() if line.startswith(".venv/bin/mypy ")]
    assert len(mypy_lines) == 1, proc.stdout
    folders = (ROOT / "DISTRIBUTIONS").read_text(encoding="utf-8").split()
    assert mypy_lines[0][1:] == [f"{folder}/src" for folder in folders]
    assert "make lint" in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


GOOD = '''
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class Producer:
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


def stop(producer: IPushProducer) -> None:
    producer.stopProducing()


stop(Producer())
'''

BAD = '''
def count(text: str) -> int:
    return text


def untyped(value):
    return value
'''


def test_the_mypy_settings_reject_a_type_error(tmp_path: Path) -> None:
    """Under the root settings a wrong return type and a missing annotation fail; zope interfaces are understood."""
    pytest.importorskip("mypy", reason="mypy comes with `make lint`'s tools, not with the distributions")
    (tmp_path / "good.py").write_text(GOOD, encoding="utf-8")
    (tmp_path / "bad.py").write_text(BAD, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--no-error-summary", "good.py", "bad.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if ": error: " in line]
    assert len(errors) == 2, proc.stdout
    assert errors[0].startswith("bad.py:3: error: Incompatible return value type"), errors
    assert errors[1].startswith("bad.py:6: error: Function is missing a type annotation"), errors
