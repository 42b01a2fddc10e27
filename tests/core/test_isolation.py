"""A root worker's children under ``isolation: none`` read as other users do: what they cannot read is said."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import TestCase

from vxsandbox_core import Sandbox, cli
from vxsandbox_core.isolation import unreadable_by_children
from vxsandbox_core.testing import hooks_with, python_worker_config


@pytest.fixture
def top() -> Iterator[Path]:
    """A folder others may enter (pytest's own tmp_path lies under a 0700 folder)."""
    top = Path(tempfile.mkdtemp())
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top)


@pytest.fixture
def script(top: Path) -> Path:
    folder = top / "app"
    folder.mkdir()
    script = folder / "child.py"
    script.write_text("print('hi')\n")
    os.chmod(folder, 0o755)
    os.chmod(script, 0o644)
    return script


def test_a_readable_file_is_not_reported(script: Path) -> None:
    assert unreadable_by_children([str(script), str(script.parent)]) == []


def test_a_folder_others_cannot_enter_is_named_with_its_mode(script: Path) -> None:
    os.chmod(script.parent, 0o700)
    [problem] = unreadable_by_children([str(script)])
    assert problem.startswith(f"{script}: {script.parent} cannot be entered by other users (mode 0700)")
    assert "o+x" in problem


def test_a_file_others_cannot_read_is_named(script: Path) -> None:
    os.chmod(script, 0o600)
    [problem] = unreadable_by_children([str(script)])
    assert f"{script} cannot be read by other users (mode 0600)" in problem


def test_a_link_is_followed_to_where_it_leads(script: Path, top: Path) -> None:
    os.chmod(script.parent, 0o700)
    link = top / "link.py"
    link.symlink_to(script)
    [problem] = unreadable_by_children([str(link)])
    assert f"{script.parent} cannot be entered" in problem


def test_missing_paths_are_left_to_other_checks(top: Path) -> None:
    assert unreadable_by_children([str(top / "nothing-here.js")]) == []


def test_a_program_others_cannot_run_is_named(script: Path) -> None:
    os.chmod(script, 0o744)
    [problem] = unreadable_by_children([], programs=[str(script)])
    assert f"{script} cannot be run by other users (mode 0744)" in problem
    assert "o+x" in problem


def test_a_program_in_a_folder_others_cannot_enter_is_named(script: Path) -> None:
    os.chmod(script, 0o755)
    os.chmod(script.parent, 0o700)
    [problem] = unreadable_by_children([], programs=[str(script)])
    assert problem.startswith(f"{script}: {script.parent} cannot be entered by other users (mode 0700)")


def test_a_program_others_may_run_is_not_reported(script: Path) -> None:
    os.chmod(script, 0o711)
    assert unreadable_by_children([], programs=[str(script)]) == []


class StartupWarningTests(TestCase):
    async def test_a_root_worker_says_at_startup_what_its_children_cannot_read(self) -> None:
        top = tempfile.mkdtemp()
        script = os.path.join(top, "child.py")
        with open(script, "w") as f:
            f.write("print('hi')\n")
        os.chmod(top, 0o700)
        self.addCleanup(shutil.rmtree, top)
        closed = await self.startup_warnings(python_worker_config([script], isolation="none"))
        if os.geteuid() == 0:
            self.assertEqual(len(closed), 1, closed)
            self.assertIn(f"{script}: {top} cannot be entered by other users (mode 0700)", closed[0])
        else:
            # A worker that is not root runs its children as itself: they read what it reads.
            self.assertEqual(closed, [])

    async def test_a_root_worker_says_at_startup_when_its_children_cannot_run_the_program(self) -> None:
        # e.g. node installed by nvm under /root (mode 0700), the worker running as root without bwrap
        top = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, top)
        program = os.path.join(top, "python3")
        os.symlink(sys.executable, program)
        closed = await self.startup_warnings(
            python_worker_config(["-c", "pass"], executable=program, isolation="none"))
        if os.geteuid() == 0:
            self.assertEqual(len(closed), 1, closed)
            self.assertIn(f"{program}: {top} cannot be entered by other users (mode 0700)", closed[0])
        else:
            self.assertEqual(closed, [])

    async def startup_warnings(self, config: dict[str, Any]) -> list[str]:
        """The WARNINGs about unreachable paths a worker with ``config`` logs while it starts."""
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append  # type: ignore[method-assign]
        logger = logging.getLogger("vxsandbox.worker")
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        worker = Sandbox(config, hooks=hooks_with())
        await worker.setup()
        await worker.teardown()
        return [r.getMessage() for r in records if "will not be able to" in r.getMessage()]


def test_check_reports_a_program_a_root_workers_children_cannot_run(top: Path) -> None:
    """``vxsandbox check`` says what the worker would log at startup, as an error: every run would fail."""
    folder = top / "closed"
    folder.mkdir(mode=0o700)
    program = folder / "python3"
    program.symlink_to(sys.executable)
    raw = python_worker_config(["-c", "pass"], executable=str(program), isolation="none")
    _lines, errors = cli.check_config(raw)
    unreachable = [e for e in errors if "will not be able to run or read" in e]
    if os.geteuid() == 0:
        [error] = unreachable
        assert f"{program}: {folder} cannot be entered by other users (mode 0700)" in error
    else:
        assert unreachable == []
