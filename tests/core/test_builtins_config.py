"""Tests for the built-in ``config`` resource (vxsandbox_core.builtins.config)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from vxsandbox_core.builtins import ConfigResource
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.registry import resolve_resource
from vxsandbox_core.testing import FakeSandboxApi

from .bodies import json_values


async def get(resource: ConfigResource, **fields: Any) -> dict[str, Any]:
    """Send ``config.get`` through a fake run's dispatch and return the reply the child would get."""
    api = FakeSandboxApi()
    api.resources.add("config", resource)
    await api.dispatch_request({"cmd": "config.get", "cmd_id": "1", "reply": False, **fields})
    (reply,) = api.sent
    return reply


class ConfigResourceTests(TestCase):

    async def test_string_value_is_returned_as_is(self) -> None:
        """A string value reaches the app unchanged."""
        resource = ConfigResource("config", None, {"cls": "config", "values": {"greeting": "hëllo"}})
        reply = await get(resource, key="greeting")
        assert reply["success"] is True
        assert reply["value"] == "hëllo"
        assert reply["cmd_id"] == "1"

    async def test_non_string_value_is_json_encoded(self) -> None:
        """A mapping value is JSON-encoded, so a vumigo_v02 app can JSON.parse the ``config`` key."""
        values = {"config": {"name": "tea", "choices": [1, 2], "ok": True}}
        resource = ConfigResource("config", None, {"cls": "config", "values": values})
        reply = await get(resource, key="config")
        assert json.loads(reply["value"]) == values["config"]

    async def test_missing_key_is_null(self) -> None:
        """A key that is not configured succeeds with a null value, as Vumi Go and the toolkit's dummy did."""
        resource = ConfigResource("config", None, {"cls": "config", "values": {"a": "1"}})
        reply = await get(resource, key="translation.en")
        assert reply["success"] is True
        assert "value" in reply and reply["value"] is None

    async def test_non_string_key_is_an_error_reply(self) -> None:
        """A request whose key is not a string fails with a reason."""
        resource = ConfigResource("config", None, {"cls": "config"})
        reply = await get(resource, key=5)
        assert reply["success"] is False
        assert "key" in reply["reason"]

    async def test_file_values_are_read_at_setup(self) -> None:
        """``keys`` maps a key to a file whose text is its value."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('{"name": "from-file"}')
        resource = ConfigResource("config", None, {"cls": "config", "keys": {"config": path}})
        resource.setup()
        reply = await get(resource, key="config")
        assert json.loads(reply["value"]) == {"name": "from-file"}

    def test_unreadable_file_stops_setup(self) -> None:
        """A missing file is a config error naming the key."""
        resource = ConfigResource("config", None, {"cls": "config", "keys": {"config": "/nonexistent/x.json"}})
        with pytest.raises(ConfigError, match=r"sandbox\.config\.keys\.config"):
            resource.setup()

    def test_bad_options_are_config_errors(self) -> None:
        """``values`` must be a mapping; the error names the key."""
        with pytest.raises(ConfigError, match=r"sandbox\.cfg\.values"):
            ConfigResource("cfg", None, {"cls": "config", "values": ["a"]})

    def test_entry_point_and_legacy_name_resolve(self) -> None:
        """``config`` and the seed's FileConfigResource name both resolve to this resource."""
        assert resolve_resource("config") is ConfigResource
        assert resolve_resource("vxsandbox.resources.config.FileConfigResource") is ConfigResource


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.dictionaries(st.text(max_size=8), json_values, max_size=4), key=st.text(max_size=8),
       asked_between=st.lists(st.text(max_size=8), max_size=3))
def test_the_same_key_always_gets_the_same_reply(values: dict[str, Any], key: str, asked_between: list[str]) -> None:
    """What FIXED promises the runner: a get of a key succeeds with the same reply (bar its cmd_id) every time,
    whatever was asked before, so a warm child may keep the first and answer later gets itself."""
    assert ConfigResource.FIXED == {"get": "key"}
    resource = ConfigResource("config", None, {"cls": "config", "values": values})
    api = FakeSandboxApi()
    api.resources.add("config", resource)
    replies = []
    for n, asked in enumerate([key, *asked_between, key]):
        api.dispatch_request({"cmd": "config.get", "cmd_id": str(n), "reply": False, "key": asked})
        replies.append(api.sent[-1])
    first, last = ({k: v for k, v in reply.items() if k != "cmd_id"} for reply in (replies[0], replies[-1]))
    assert first == last and first["success"] is True
