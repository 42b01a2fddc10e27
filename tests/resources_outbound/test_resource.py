"""Tests for the ``outbound`` resource: every command and error reply, and what reaches the broker."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from vxsandbox_core import ConfigError, Sandbox
from vxsandbox_core.testing import (
    FakeSandboxApi,
    RecordingBroker,
    hooks_with,
    make_user_message,
    python_child,
    python_worker_config,
)
from vxsandbox_resources_outbound import OutboundResource

SEND_TO = {
    "sms": {"transport_name": "sms_transport", "transport_type": "sms", "from_addr": "+27800000001",
            "helper_metadata": {"tag": ["pool", "t1"]}},
    "plain": {"transport_name": "plain_transport"},
}
METADATA = ("transport_metadata", "helper_metadata", "routing_metadata")


class FailingBroker:
    """A broker whose every publish fails, as a broker that lost its connection does."""

    async def publish(self, routing_key: str, body: bytes) -> None:
        raise ConnectionError("channel closed")


class GatedBroker(RecordingBroker):
    """A broker that only finishes a publish when the test fires ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: Deferred[None] = Deferred()

    async def publish(self, routing_key: str, body: bytes) -> None:
        await self.gate
        await super().publish(routing_key, body)


def worker_for(requests: list[dict[str, Any]] | None = None, broker: Any = None,
               outbound: dict[str, Any] | None = None, **extra: Any) -> Sandbox:
    """A generic worker whose child sends ``requests`` and offers an ``outbound`` resource."""
    sandbox = {"outbound": {"cls": "outbound", "allowed_helper_metadata": ["voice", "go"], **(outbound or {})}}
    extra.setdefault("send_to", SEND_TO)
    args = python_child(requests) if requests is not None else ["-c", "pass"]
    return Sandbox(python_worker_config(args, sandbox=sandbox, **extra), broker=broker, hooks=hooks_with())


def inbound(**fields: Any):
    """An inbound user message with a known id."""
    fields.setdefault("message_id", "msg-1")
    fields.setdefault("transport_metadata", {"session_id": "s-42"})
    fields.setdefault("helper_metadata", {"go": {"user_account": "acc"}})
    return make_user_message(**fields)


class ChildTestCase(TestCase):
    """Runs a real child through the outbound resource and keeps the replies and published messages."""

    async def run_child(self, requests: list[dict[str, Any]], msg: Any = None, broker: Any = None,
                        **kw: Any) -> list[dict[str, Any]]:
        self.broker = broker if broker is not None else RecordingBroker()
        self.worker = worker_for(requests, broker=self.broker, **kw)
        await self.worker.setup()
        outcome = await self.worker.process_message(msg if msg is not None else inbound())
        self.assertEqual(outcome, "ok")
        replies = self.worker.resources.resources["record"].replies()
        self.assertEqual(len(replies), len(requests))
        return replies

    def published(self, routing_key: str | None = None) -> list[dict[str, Any]]:
        return self.broker.messages(routing_key)

    def assert_metadata_objects(self, msg: dict[str, Any]) -> None:
        for name in METADATA:
            self.assertIsInstance(msg[name], dict, name)


class ReplyToTests(ChildTestCase):
    async def test_reply_to_publishes_a_swapped_reply(self):
        """reply_to publishes to the inbound transport with addresses swapped and in_reply_to set."""
        replies = await self.run_child([{"cmd": "outbound.reply_to", "content": "Welcome!", "in_reply_to": "msg-1"}])
        self.assertEqual(replies[0]["success"], True, replies[0])
        self.assertEqual(replies[0]["cmd"], "outbound.reply_to")
        [(key, body)] = self.broker.published
        self.assertEqual(key, "test_transport.outbound")
        msg = json.loads(body)
        self.assertEqual(msg["to_addr"], "+27831234567")
        self.assertEqual(msg["from_addr"], "*120*8864#")
        self.assertEqual(msg["in_reply_to"], "msg-1")
        self.assertEqual(msg["content"], "Welcome!")
        self.assertIsNone(msg["session_event"])
        self.assertEqual(msg["transport_name"], "test_transport")
        self.assertEqual(msg["transport_type"], "ussd")
        self.assertEqual(msg["transport_metadata"], {"session_id": "s-42"})
        self.assertEqual(msg["helper_metadata"], {"go": {"user_account": "acc"}})
        self.assertEqual(msg["message_type"], "user_message")
        self.assertNotEqual(msg["message_id"], "msg-1")
        self.assert_metadata_objects(msg)

    async def test_continue_session_false_closes_the_session(self):
        """continue_session false makes the reply's session_event close."""
        await self.run_child([{"cmd": "outbound.reply_to", "content": "Bye", "in_reply_to": "msg-1",
                               "continue_session": False}])
        [msg] = self.published()
        self.assertEqual(msg["session_event"], "close")

    async def test_continue_session_true_keeps_the_session(self):
        """continue_session true gives no session_event, as Vumi's reply does."""
        await self.run_child([{"cmd": "outbound.reply_to", "content": "Next", "in_reply_to": "msg-1",
                               "continue_session": True}])
        self.assertIsNone(self.published()[0]["session_event"])

    async def test_null_content_and_allowed_helper_metadata(self):
        """Null content is sent as null and allowed helper_metadata keys are merged into the reply's."""
        replies = await self.run_child([{"cmd": "outbound.reply_to", "content": None, "in_reply_to": "msg-1",
                                         "helper_metadata": {"voice": {"speech_url": "http://x/1.ogg"}}}])
        self.assertTrue(replies[0]["success"])
        [msg] = self.published()
        self.assertIsNone(msg["content"])
        self.assertEqual(msg["helper_metadata"], {"go": {"user_account": "acc"},
                                                  "voice": {"speech_url": "http://x/1.ogg"}})

    async def test_reply_keeps_the_inbound_endpoint(self):
        """A reply to a message that came through endpoint 'sms' is published through that endpoint."""
        await self.run_child([{"cmd": "outbound.reply_to", "content": "hi", "in_reply_to": "msg-1"}],
                             msg=inbound(routing_metadata={"endpoint_name": "sms", "hops": [1]}))
        [(key, body)] = self.broker.published
        self.assertEqual(key, "sms_transport.outbound")
        self.assertEqual(json.loads(body)["routing_metadata"], {"endpoint_name": "sms"})

    async def test_non_ascii_content_survives(self):
        """Non-ASCII content from the child reaches the broker body as UTF-8."""
        await self.run_child([{"cmd": "outbound.reply_to", "content": "Sawubona ☕ ñ", "in_reply_to": "msg-1"}])
        [(_, body)] = self.broker.published
        self.assertIn("Sawubona ☕ ñ".encode(), body)

    async def test_reply_to_group_from_a_group_goes_to_the_group(self):
        """reply_to_group answering a group message has to_addr null and keeps the group."""
        replies = await self.run_child(
            [{"cmd": "outbound.reply_to_group", "content": "all", "in_reply_to": "msg-1",
              "continue_session": False}],
            msg=inbound(group="#channel", to_addr="bot"))
        self.assertTrue(replies[0]["success"])
        [msg] = self.published()
        self.assertIsNone(msg["to_addr"])
        self.assertEqual(msg["group"], "#channel")
        self.assertEqual(msg["from_addr"], "bot")
        self.assertEqual(msg["in_reply_to"], "msg-1")
        self.assertEqual(msg["session_event"], "close")
        self.assert_metadata_objects(msg)

    async def test_reply_to_group_without_a_group_goes_to_the_sender(self):
        """reply_to_group answering a one-to-one message replies to its sender."""
        await self.run_child([{"cmd": "outbound.reply_to_group", "content": "x", "in_reply_to": "msg-1"}])
        self.assertEqual(self.published()[0]["to_addr"], "+27831234567")


class SendToTests(ChildTestCase):
    async def test_send_to_default_endpoint(self):
        """send_to without endpoint sends a new message through the worker's own transport."""
        replies = await self.run_child([{"cmd": "outbound.send_to", "to_addr": "+27820000002", "content": "Hi"}])
        self.assertTrue(replies[0]["success"], replies[0])
        [(key, body)] = self.broker.published
        self.assertEqual(key, "test_transport.outbound")
        msg = json.loads(body)
        self.assertEqual(msg["to_addr"], "+27820000002")
        self.assertIsNone(msg["from_addr"])
        self.assertEqual(msg["content"], "Hi")
        self.assertIsNone(msg["in_reply_to"])
        self.assertIsNone(msg["session_event"])
        self.assertEqual(msg["transport_name"], "test_transport")
        self.assertEqual(msg["transport_type"], "sms")
        self.assertEqual(msg["routing_metadata"].get("endpoint_name", "default"), "default")
        self.assert_metadata_objects(msg)

    async def test_send_to_named_endpoint_uses_its_options(self):
        """send_to through 'sms' publishes to its transport with its from_addr and helper_metadata."""
        replies = await self.run_child([{"cmd": "outbound.send_to", "to_addr": "+27820000002", "content": "Hi",
                                         "endpoint": "sms", "helper_metadata": {"voice": {"v": 1}}}])
        self.assertTrue(replies[0]["success"], replies[0])
        [(key, body)] = self.broker.published
        self.assertEqual(key, "sms_transport.outbound")
        msg = json.loads(body)
        self.assertEqual(msg["from_addr"], "+27800000001")
        self.assertEqual(msg["transport_name"], "sms_transport")
        self.assertEqual(msg["routing_metadata"], {"endpoint_name": "sms"})
        self.assertEqual(msg["helper_metadata"], {"tag": ["pool", "t1"], "voice": {"v": 1}})

    async def test_send_to_endpoint(self):
        """send_to_endpoint sends through the named endpoint, with the configured transport_type fallback."""
        replies = await self.run_child(
            [{"cmd": "outbound.send_to_endpoint", "endpoint": "plain", "to_addr": "u1", "content": None}],
            outbound={"transport_type": "telnet"})
        self.assertTrue(replies[0]["success"], replies[0])
        [(key, body)] = self.broker.published
        self.assertEqual(key, "plain_transport.outbound")
        msg = json.loads(body)
        self.assertEqual((msg["to_addr"], msg["content"], msg["transport_type"]), ("u1", None, "telnet"))
        self.assertEqual(msg["routing_metadata"], {"endpoint_name": "plain"})

    async def test_every_command_in_one_run(self):
        """A child may use all four commands in one run; each message is published once."""
        replies = await self.run_child([
            {"cmd": "outbound.reply_to", "content": "a", "in_reply_to": "msg-1"},
            {"cmd": "outbound.reply_to_group", "content": "b", "in_reply_to": "msg-1"},
            {"cmd": "outbound.send_to", "content": "c", "to_addr": "x"},
            {"cmd": "outbound.send_to_endpoint", "content": "d", "to_addr": "y", "endpoint": "sms"},
        ])
        self.assertEqual([r["success"] for r in replies], [True] * 4)
        self.assertEqual(sorted(m["content"] for m in self.published()), ["a", "b", "c", "d"])


class ErrorReplyTests(ChildTestCase):
    """Every bad field gets success false, a reason naming it, and nothing is published."""

    CASES: list[tuple[dict[str, Any], str]] = [
        ({"cmd": "outbound.reply_to", "in_reply_to": "msg-1"}, "'content'"),
        ({"cmd": "outbound.reply_to", "content": 5, "in_reply_to": "msg-1"}, "'content'"),
        ({"cmd": "outbound.reply_to", "content": ["a"], "in_reply_to": "msg-1"}, "'content'"),
        ({"cmd": "outbound.reply_to", "content": "x"}, "'in_reply_to'"),
        ({"cmd": "outbound.reply_to", "content": "x", "in_reply_to": 7}, "'in_reply_to'"),
        ({"cmd": "outbound.reply_to", "content": "x", "in_reply_to": "nope"}, "'in_reply_to'"),
        ({"cmd": "outbound.reply_to", "content": "x", "in_reply_to": "msg-1", "continue_session": "no"},
         "'continue_session'"),
        ({"cmd": "outbound.reply_to", "content": "x", "in_reply_to": "msg-1", "continue_session": 0},
         "'continue_session'"),
        ({"cmd": "outbound.reply_to", "content": "x", "in_reply_to": "msg-1", "helper_metadata": [1]},
         "'helper_metadata'"),
        ({"cmd": "outbound.reply_to", "content": "x", "in_reply_to": "msg-1",
          "helper_metadata": {"voice": {}, "billing": {"free": True}}}, "'billing'"),
        ({"cmd": "outbound.reply_to_group", "in_reply_to": "msg-1"}, "'content'"),
        ({"cmd": "outbound.reply_to_group", "content": "x", "in_reply_to": "other"}, "'in_reply_to'"),
        ({"cmd": "outbound.reply_to_group", "content": "x", "in_reply_to": "msg-1", "continue_session": None},
         "'continue_session'"),
        ({"cmd": "outbound.reply_to_group", "content": "x", "in_reply_to": "msg-1",
          "helper_metadata": {"billing": 1}}, "'billing'"),
        ({"cmd": "outbound.send_to", "content": "x"}, "'to_addr'"),
        ({"cmd": "outbound.send_to", "content": "x", "to_addr": 27831234567}, "'to_addr'"),
        ({"cmd": "outbound.send_to", "content": "x", "to_addr": ""}, "'to_addr'"),
        ({"cmd": "outbound.send_to", "to_addr": "a"}, "'content'"),
        ({"cmd": "outbound.send_to", "content": {}, "to_addr": "a"}, "'content'"),
        ({"cmd": "outbound.send_to", "content": "x", "to_addr": "a", "endpoint": "mars"}, "'mars'"),
        ({"cmd": "outbound.send_to", "content": "x", "to_addr": "a", "endpoint": 3}, "'endpoint'"),
        ({"cmd": "outbound.send_to", "content": "x", "to_addr": "a", "helper_metadata": "v"}, "'helper_metadata'"),
        ({"cmd": "outbound.send_to", "content": "x", "to_addr": "a", "helper_metadata": {"tag": 1}}, "'tag'"),
        ({"cmd": "outbound.send_to_endpoint", "content": "x", "to_addr": "a"}, "'endpoint'"),
        ({"cmd": "outbound.send_to_endpoint", "content": "x", "to_addr": "a", "endpoint": None}, "'endpoint'"),
        ({"cmd": "outbound.send_to_endpoint", "content": "x", "to_addr": "a", "endpoint": "mars"}, "'mars'"),
        ({"cmd": "outbound.send_to_endpoint", "content": "x", "endpoint": "sms"}, "'to_addr'"),
        ({"cmd": "outbound.send_to_endpoint", "to_addr": "a", "endpoint": "sms"}, "'content'"),
        ({"cmd": "outbound.send_to_endpoint", "content": 1.5, "to_addr": "a", "endpoint": "sms"}, "'content'"),
        ({"cmd": "outbound.send_to_endpoint", "content": "x", "to_addr": "a", "endpoint": "sms",
          "helper_metadata": {"go": {}, "evil": {}}}, "'evil'"),
    ]

    async def test_every_error_reply_through_a_child(self):
        """Each bad request from a real child gets success false with a reason naming the bad field."""
        replies = await self.run_child([dict(req) for req, _ in self.CASES])
        for (req, needle), reply in zip(self.CASES, replies, strict=True):
            self.assertIs(reply["success"], False, (req, reply))
            self.assertIn(needle, reply["reason"], (req, reply))
        self.assertEqual(self.broker.published, [])

    async def test_unknown_in_reply_to_says_not_received(self):
        """An in_reply_to naming no message of this run says it was not received by this run."""
        [reply] = await self.run_child([{"cmd": "outbound.reply_to", "content": "x", "in_reply_to": "zzz"}])
        self.assertEqual(reply["reason"], "'in_reply_to': 'zzz' is not a message this sandbox run received")

    async def test_disallowed_key_lists_what_is_allowed(self):
        """A disallowed helper_metadata key's reason names the key and the allowed keys."""
        [reply] = await self.run_child([{"cmd": "outbound.send_to", "content": "x", "to_addr": "a",
                                         "helper_metadata": {"billing": 1}}])
        self.assertEqual(reply["reason"], "'helper_metadata' key 'billing' is not allowed (allowed keys: go, voice)")

    async def test_no_helper_metadata_allowed_by_default(self):
        """Without allowed_helper_metadata, any helper_metadata key is refused, but null and {} are fine."""
        replies = await self.run_child([
            {"cmd": "outbound.send_to", "content": "x", "to_addr": "a", "helper_metadata": {"voice": 1}},
            {"cmd": "outbound.send_to", "content": "x", "to_addr": "a", "helper_metadata": None},
            {"cmd": "outbound.send_to", "content": "x", "to_addr": "a", "helper_metadata": {}},
        ], outbound={"allowed_helper_metadata": []})
        self.assertEqual([r["success"] for r in replies], [False, True, True])
        self.assertIn("(allowed keys: none)", replies[0]["reason"])

    async def test_unconfigured_endpoint_reason_names_it(self):
        """An unconfigured endpoint's reason names it and the configured ones."""
        [reply] = await self.run_child([{"cmd": "outbound.send_to_endpoint", "content": "x", "to_addr": "a",
                                         "endpoint": "mars"}])
        self.assertIn("'endpoint'", reply["reason"])
        self.assertIn("'mars' is not configured", reply["reason"])

    async def test_another_runs_message_cannot_be_answered(self):
        """A second run cannot reply to the message the first run received."""
        requests = [{"cmd": "outbound.reply_to", "content": "x", "in_reply_to": "msg-A"}]
        broker = RecordingBroker()
        first = await self.run_child(requests, msg=inbound(message_id="msg-A"), broker=broker)
        self.assertTrue(first[0]["success"])
        second_worker = self.worker
        await second_worker.process_message(inbound(message_id="msg-B"))
        second = second_worker.resources.resources["record"].replies()
        self.assertFalse(second[0]["success"])
        self.assertIn("'msg-A' is not a message this sandbox run received", second[0]["reason"])
        self.assertEqual(len(broker.published), 1)

    async def test_event_run_cannot_reply(self):
        """A run started for an event received no user message, so reply_to fails."""
        from vxsandbox_core.message import TransportEvent
        requests = [{"cmd": "outbound.reply_to", "content": "x", "in_reply_to": "msg-1"}]
        self.broker = RecordingBroker()
        worker = worker_for(requests, broker=self.broker)
        await worker.setup()
        event = TransportEvent(event_type="ack", user_message_id="msg-1", sent_message_id="msg-1",
                               transport_name="test_transport")
        await worker.process_event(event)
        [reply] = worker.resources.resources["record"].replies()
        self.assertFalse(reply["success"])
        self.assertIn("'in_reply_to'", reply["reason"])

    async def test_failed_publish_is_an_error_reply(self):
        """When the broker fails, the child gets success false with the broker's reason."""
        replies = await self.run_child([
            {"cmd": "outbound.reply_to", "content": "x", "in_reply_to": "msg-1"},
            {"cmd": "outbound.send_to", "content": "x", "to_addr": "a"},
        ], broker=FailingBroker())
        for reply in replies:
            self.assertFalse(reply["success"])
            self.assertIn("ConnectionError: channel closed", reply["reason"])

    async def test_worker_without_broker_is_an_error_reply(self):
        """A worker with no broker answers success false saying so."""
        self.broker = None
        worker = worker_for([{"cmd": "outbound.send_to", "content": "x", "to_addr": "a"}])
        await worker.setup()
        await worker.process_message(inbound())
        [reply] = worker.resources.resources["record"].replies()
        self.assertFalse(reply["success"])
        self.assertIn("no broker", reply["reason"])

    async def test_invalid_endpoint_options_are_an_error_reply(self):
        """send_to options that make an invalid message give an error naming the endpoint."""
        [reply] = await self.run_child([{"cmd": "outbound.send_to", "content": "x", "to_addr": "a",
                                         "endpoint": "bad"}],
                                       send_to={"bad": {"transport_name": "t", "transport_metadata": "oops"}})
        self.assertFalse(reply["success"])
        self.assertIn("endpoint 'bad'", reply["reason"])


class OutboundUnitTests(TestCase):
    """The resource's handlers driven directly through FakeSandboxApi."""

    def setUp(self):
        self.broker = GatedBroker()
        self.worker = worker_for(broker=self.broker)
        self.resource = self.worker.resources.resources["outbound"]
        self.api = FakeSandboxApi(self.worker, sandbox_id="t1")
        msg = inbound()
        self.api.inbound_messages[msg["message_id"]] = msg

    def test_reply_waits_for_the_publish(self):
        """The reply to reply_to fires only once the broker has taken the message."""
        d = self.resource.dispatch_request(self.api, {"cmd": "reply_to", "cmd_id": "1", "content": "x",
                                                      "in_reply_to": "msg-1"})
        self.assertNoResult(d)
        self.assertEqual(self.broker.published, [])
        self.broker.gate.callback(None)
        reply = self.successResultOf(d)
        self.assertTrue(reply["success"])
        self.assertEqual(len(self.broker.published), 1)

    def test_send_waits_for_the_publish(self):
        """The reply to send_to fires only once the broker has taken the message."""
        d = self.resource.dispatch_request(self.api, {"cmd": "send_to", "cmd_id": "1", "content": "x",
                                                      "to_addr": "a"})
        self.assertNoResult(d)
        self.broker.gate.callback(None)
        self.assertTrue(self.successResultOf(d)["success"])

    def test_error_reply_has_protocol_fields(self):
        """An error reply carries cmd, cmd_id, reply true, success false and a reason."""
        reply = self.successResultOf(Deferred.fromCoroutine(self.api.call_resource(
            self.resource, {"cmd": "reply_to", "cmd_id": "9", "content": 1, "in_reply_to": "msg-1"})))
        self.assertEqual({k: reply[k] for k in ("cmd", "cmd_id", "reply", "success")},
                         {"cmd": "reply_to", "cmd_id": "9", "reply": True, "success": False})
        self.assertEqual(reply["reason"], "'content' must be a string or null, got a number 1")

    def test_unknown_command_kills_the_sandbox(self):
        """A command the resource does not have kills the sandbox."""
        self.resource.dispatch_request(self.api, {"cmd": "broadcast", "cmd_id": "1"})
        self.assertEqual(self.api.killed, ["unknown command"])

    def test_bad_config_names_the_key(self):
        """allowed_helper_metadata that is not a list of strings is a config error naming the key."""
        for bad in ["voice", [1], {"voice": True}]:
            with self.assertRaises(ConfigError) as e:
                OutboundResource("outbound", self.worker, {"cls": "outbound", "allowed_helper_metadata": bad})
            self.assertEqual(e.exception.key, "sandbox.outbound.allowed_helper_metadata")

    def test_resolves_from_legacy_vumi_name(self):
        """The seed's class path still names this resource."""
        worker = Sandbox(python_worker_config(["-c", "pass"], sandbox={
            "outbound": {"cls": "vumi.application.sandbox.OutboundResource"}}), hooks=hooks_with())
        self.assertIsInstance(worker.resources.resources["outbound"], OutboundResource)

