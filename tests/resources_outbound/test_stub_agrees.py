"""The testing stub and the real ``outbound`` resource apply the same rules, so broker tests stay true."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from vxsandbox_core import Sandbox
from vxsandbox_core.testing import FakeSandboxApi, RecordingBroker, hooks_with, make_user_message, python_worker_config

SEND_TO = {
    "sms": {"transport_name": "sms_transport", "transport_type": "sms", "from_addr": "+27800000001",
            "from_addr_type": "msisdn", "to_addr_type": "msisdn", "provider": "mno", "group": "g1",
            "transport_metadata": {"account": "a1"}, "helper_metadata": {"tag": ["pool", "t1"]}},
    "plain": {"transport_name": "plain_transport"},
    "no_name": {"from_addr": "*120#"},
    "bad": {"transport_name": "t", "transport_metadata": "oops"},
}

#: in_reply_to values an app might send to answer a message that is not its own
HOSTILE_IN_REPLY_TO: list[Any] = [
    None, "", 7, 1.5, True, ["msg-1"], {"message_id": "msg-1"},
    "nope", "msg-1 ", "MSG-1", "__proto__", "constructor",
    "msg-other-run", "msg-other-tenant", "event-1",
]


class StubAgreesTests(TestCase):
    """The same requests to the stub and to the outbound resource get the same replies and messages."""

    def setUp(self):
        self.broker = RecordingBroker()
        config = python_worker_config(["-c", "pass"], send_to=SEND_TO, sandbox={
            "outbound": {"cls": "outbound", "transport_type": "ussd"},
            "stub": {"cls": "vxsandbox_core.testing:StubOutboundResource", "transport_type": "ussd"},
        })
        self.worker = Sandbox(config, broker=self.broker, hooks=hooks_with())
        self.api = self.api_with("test-sandbox", "msg-1")
        # Runs that are not this one: the same tenant's next run and another tenant's run.
        self.api_with("test-sandbox", "msg-other-run")
        self.api_with("other-tenant", "msg-other-tenant")

    def api_with(self, sandbox_id: str, message_id: str) -> FakeSandboxApi:
        api = FakeSandboxApi(self.worker, sandbox_id=sandbox_id)
        api.sandbox_inbound_message(make_user_message(message_id=message_id))
        return api

    async def both(self, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        """The replies of outbound and of the stub to ``request``, and what each published."""
        replies, published = [], []
        for name in ("outbound", "stub"):
            before = len(self.broker.published)
            reply = await self.api.call_resource(self.worker.resources.get(name), dict(request, cmd_id="1"))
            assert reply is not None
            replies.append(reply)
            published.append([comparable(key, body) for key, body in self.broker.published[before:]])
        self.assertEqual(published[0], published[1], request)
        return replies[0], replies[1], published[0]

    async def test_hostile_in_reply_to_refused_for_the_same_reason(self):
        """Every in_reply_to naming no message of this run is refused by both with the same reason."""
        self.api.sandbox_inbound_event(make_user_message(message_id="event-1"))
        for value in [*HOSTILE_IN_REPLY_TO, "missing"]:
            request: dict[str, Any] = {"cmd": "reply_to", "content": "x"}
            if value != "missing":
                request["in_reply_to"] = value
            outbound, stub, published = await self.both(request)
            self.assertIs(outbound["success"], False, request)
            self.assertEqual(stub["reason"], outbound["reason"], request)
            self.assertIs(stub["success"], False, request)
            self.assertEqual(published, [], request)

    async def test_reply_to_a_received_message_is_the_same_reply(self):
        """A reply to this run's message publishes the same reply through both."""
        for continue_session in (True, False):
            outbound, stub, published = await self.both({"cmd": "reply_to", "content": "hi",
                                                         "in_reply_to": "msg-1",
                                                         "continue_session": continue_session})
            self.assertEqual((outbound["success"], stub["success"]), (True, True))
            [(routing_key, msg)] = published
            self.assertEqual((routing_key, msg["in_reply_to"]), ("test_transport.outbound", "msg-1"))

    async def test_endpoint_options_make_the_same_message(self):
        """Each endpoint's send_to options build the same message through both, or the same refusal."""
        for endpoint in ("default", "sms", "plain", "no_name", "bad", "mars", None):
            request: dict[str, Any] = {"cmd": "send_to", "content": "x", "to_addr": "+27831234567"}
            if endpoint is not None:
                request["endpoint"] = endpoint
            outbound, stub, published = await self.both(request)
            self.assertEqual(stub.get("reason"), outbound.get("reason"), request)
            self.assertEqual(stub["success"], outbound["success"], request)
            if endpoint in ("bad", "mars"):
                self.assertIs(outbound["success"], False)
                self.assertIn(f"{endpoint!r}", outbound["reason"])
            else:
                self.assertIs(outbound["success"], True, outbound)
                [(_, msg)] = published
                self.assertEqual(msg["transport_type"], "sms" if endpoint == "sms" else "ussd")

    async def test_sms_endpoint_message_carries_its_options(self):
        """The message both build for the sms endpoint carries every one of its send_to options."""
        _, _, [(routing_key, msg)] = await self.both({"cmd": "send_to", "content": "x", "to_addr": "a",
                                                      "endpoint": "sms"})
        self.assertEqual(routing_key, "sms_transport.outbound")
        options = SEND_TO["sms"]
        for key in ("transport_name", "transport_type", "from_addr", "from_addr_type", "to_addr_type",
                    "provider", "group", "transport_metadata", "helper_metadata"):
            self.assertEqual(msg[key], options[key], key)
        self.assertEqual(msg["routing_metadata"], {"endpoint_name": "sms"})


def comparable(routing_key: str, body: bytes) -> tuple[str, dict[str, Any]]:
    """A published message without the fields that differ between any two messages (id and time)."""
    msg = json.loads(body)
    for key in ("message_id", "timestamp"):
        msg.pop(key)
    return routing_key, msg
