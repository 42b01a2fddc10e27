"""Tests for the example ``time`` resource: handlers on a fake API, and a real child asking through a worker."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.trial.unittest import TestCase
from vxsandbox_resources_example import TimeResource

from vxsandbox_core import ConfigError, Sandbox
from vxsandbox_core.registry import clear_cache, resolve_resource
from vxsandbox_core.testing import (
    FakeSandboxApi,
    RecordingBroker,
    hooks_with,
    make_user_message,
    python_child,
    python_worker_config,
)

#: 2024-05-01 12:30:00 UTC
NOON_ISH = 1714566600.0


async def ask(resource: TimeResource, cmd: str, **fields: Any) -> dict[str, Any]:
    """Send one request to ``resource`` through a fake run and return the reply the child would get."""
    api = FakeSandboxApi()
    api.resources.add(resource.name, resource)
    await api.dispatch_request({"cmd": f"{resource.name}.{cmd}", "cmd_id": "1", "reply": False, **fields})
    (reply,) = api.sent
    return reply


class HandlerTests(TestCase):
    """The handlers, called through FakeSandboxApi with a fixed clock."""

    def make(self, **config: Any) -> TimeResource:
        resource = TimeResource("time", None, {"cls": "time", **config})
        resource.clock = lambda: NOON_ISH
        return resource

    async def test_now_in_utc(self) -> None:
        """time.now replies with the Vumi-format timestamp and the epoch seconds."""
        reply = await ask(self.make(), "now")
        assert reply["success"] is True
        assert reply["timestamp"] == "2024-05-01 12:30:00.000000"
        assert reply["unix"] == NOON_ISH

    async def test_now_at_an_offset(self) -> None:
        """offset_minutes shifts the timestamp, not the epoch seconds."""
        reply = await ask(self.make(offset_minutes=120), "now")
        assert (reply["timestamp"], reply["unix"], reply["offset_minutes"]) == (
            "2024-05-01 14:30:00.000000", NOON_ISH, 120)

    async def test_format(self) -> None:
        """time.format formats the given moment, or now."""
        assert (await ask(self.make(), "format", format="%A", unix=0))["text"] == "Thursday"
        assert (await ask(self.make(), "format", format="%H:%M"))["text"] == "12:30"

    async def test_bad_requests_fail_cleanly(self) -> None:
        """A missing or overlong format, or a unix that is not a number, gets a failed reply with a reason."""
        resource = self.make(max_format_length=5)
        for fields, reason in [({}, "'format' must be"), ({"format": "%Y-%m-%d"}, "longer than 5"),
                               ({"format": "%Y", "unix": "soon"}, "'unix' must be a number")]:
            reply = await ask(resource, "format", **fields)
            assert reply["success"] is False
            assert reason in reply["reason"]

    def test_bad_config_names_the_key(self) -> None:
        """An offset beyond 14 hours is a config error naming sandbox.<name>.offset_minutes."""
        with pytest.raises(ConfigError, match=r"sandbox\.clock\.offset_minutes"):
            TimeResource("clock", None, {"cls": "time", "offset_minutes": 900})


class RealChildTests(TestCase):
    """A real sandboxed child process asks for the time through the generic worker."""

    def test_resolves_by_entry_point_name(self) -> None:
        """``cls: time`` finds this distribution's entry point once it is installed."""
        clear_cache()
        assert resolve_resource("time") is TimeResource

    async def test_child_gets_the_time(self) -> None:
        """The child's time.now and time.format requests are answered over its pipes."""
        config = python_worker_config(
            python_child([{"cmd": "time.now"}, {"cmd": "time.format", "format": "%Y", "unix": 0}]),
            sandbox={"time": {"cls": "time"}})
        worker = Sandbox(config, broker=RecordingBroker(), hooks=hooks_with())
        await worker.setup()
        assert await worker.process_message(make_user_message()) == "ok"
        now, year = worker.resources.resources["record"].replies()
        assert now["success"] is True and len(now["timestamp"]) == 26
        assert year["text"] == "1970"
