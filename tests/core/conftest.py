"""Fixtures for core's tests: fake entry point groups behind the one loader."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vxsandbox_core import registry

from .helpers import FakeEntryPoint


@pytest.fixture
def fake_groups(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[FakeEntryPoint]]]:
    """Replace every entry point group stevedore lists with fakes; returns the dict to fill, by group."""
    groups: dict[str, list[FakeEntryPoint]] = {}
    monkeypatch.setattr("stevedore._cache.get_group_all", lambda group, path=None: groups.get(group, []))
    registry.clear_cache()
    yield groups
    registry.clear_cache()
