"""Test runs leave nothing in the repository: trial's mktemp() folders go under pytest's temp folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from .conftest import ROOT


class MktempTests(SynchronousTestCase):
    def test_mktemp_is_outside_the_repository(self) -> None:
        """A trial test case's mktemp() path is under the system temp folder, not the repository root."""
        path = Path(self.mktemp()).resolve()
        assert ROOT not in path.parents
        assert Path(tempfile.gettempdir()).resolve() in path.parents
