"""Shared test set-up: real services are required under CI and may be skipped only outside it."""

from __future__ import annotations

import os
import shutil
import socket

import pytest
from twisted.trial.unittest import SynchronousTestCase

SERVICES = {
    "rabbitmq": ("127.0.0.1", 5672, "RabbitMQ on 127.0.0.1:5672 (start it with `rabbitmq-server -detached`)"),
    "redis": ("127.0.0.1", 6379, "Redis on 127.0.0.1:6379 (start it with `redis-server --daemonize yes`)"),
}
_checked: dict[str, str | None] = {}


def _missing(marker: str) -> str | None:
    """Return why the service behind ``marker`` is unusable, or None when it answers."""
    if marker not in _checked:
        if marker == "node":
            _checked[marker] = None if shutil.which("node") else "Node.js ('node' is not on PATH)"
        else:
            host, port, what = SERVICES[marker]
            try:
                socket.create_connection((host, port), timeout=2).close()
                _checked[marker] = None
            except OSError:
                _checked[marker] = what
    return _checked[marker]


@pytest.fixture(autouse=True)
def _trial_temp_outside_the_repository(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Run trial test cases from pytest's temp folder: their mktemp() makes folders in the current directory."""
    if isinstance(request.instance, SynchronousTestCase):
        monkeypatch.chdir(tmp_path_factory.getbasetemp())


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("rabbitmq", "redis", "node"):
        if item.get_closest_marker(marker) is None:
            continue
        why = _missing(marker)
        if why is None:
            continue
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and this test needs {why}, which is not answering", pytrace=False)
        pytest.skip(f"needs {why}; not answering here")
