"""Tests for the generic worker: picking the sandbox_id, refusing messages, publishing, events."""

from __future__ import annotations

import sys

from twisted.trial.unittest import TestCase

from vxsandbox_core import Sandbox, SandboxRefusedError
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.message import TransportEvent
from vxsandbox_core.testing import (
    RecordingBroker,
    hooks_with,
    make_user_message,
    python_child,
    python_worker_config,
)

from .helpers import OrderPlugin


def worker_with(**extra) -> Sandbox:
    return Sandbox(python_worker_config(python_child([]), **extra), broker=RecordingBroker(),
                   hooks=hooks_with())


class SandboxIdTests(TestCase):
    def test_message_sandbox_id_wins(self):
        """A message that names its sandbox_id runs in that sandbox."""
        self.assertEqual(worker_with().sandbox_id_for_message(make_user_message(sandbox_id="tenant-a")), "tenant-a")

    def test_config_sandbox_id_is_the_fallback(self):
        """A vumi2 message without sandbox_id runs in the config's sandbox."""
        self.assertEqual(worker_with().sandbox_id_for_message(make_user_message()), "test-sandbox")

    async def test_message_without_any_sandbox_id_is_refused(self):
        """With neither, the message is refused with a clear reason and hooks see 'refused'."""
        plugin = OrderPlugin()
        worker = Sandbox(python_worker_config(python_child([]), sandbox_id=None), hooks=hooks_with(plugin))
        with self.assertRaises(SandboxRefusedError) as e:
            worker.sandbox_id_for_message(make_user_message())
        self.assertIn("sandbox_id", str(e.exception))
        self.assertEqual(await worker.process_message(make_user_message()), "refused")
        self.assertEqual(plugin.calls, [("message_processed", "refused")])

    async def test_event_reaches_the_child_as_inbound_event(self):
        """An event is handed to the child as inbound-event."""
        worker = worker_with()
        await worker.setup()
        event = TransportEvent(event_type="ack", user_message_id="m1", sent_message_id="s1")
        self.assertEqual(await worker.process_event(event), "ok")
        inbound = worker.resources.resources["record"].requests[-1]["inbound"]
        self.assertEqual(inbound["cmd"], "inbound-event")
        self.assertEqual(inbound["msg"]["event_type"], "ack")


class PublishTests(TestCase):
    async def test_reply_goes_to_the_transport_outbound_queue(self):
        """A reply is published on <transport_name>.outbound as Vumi JSON."""
        worker = worker_with()
        msg = make_user_message()
        await worker.publish_message(msg.reply("bye", continue_session=False))
        [(key, _)] = worker.broker.published
        self.assertEqual(key, "test_transport.outbound")
        [body] = worker.broker.messages()
        self.assertEqual((body["to_addr"], body["in_reply_to"], body["session_event"]),
                         (msg["from_addr"], msg["message_id"], "close"))

    async def test_endpoint_routes_to_its_transport(self):
        """A send_to endpoint publishes to its own transport and records the endpoint."""
        worker = worker_with(send_to={"sms": {"transport_name": "sms_transport"}})
        msg = make_user_message()
        await worker.publish_message(msg.reply("x"), endpoint="sms")
        self.assertEqual(worker.broker.published[0][0], "sms_transport.outbound")
        self.assertEqual(worker.broker.messages()[0]["routing_metadata"], {"endpoint_name": "sms"})

    async def test_unconfigured_endpoint_is_refused(self):
        """An endpoint not in send_to is refused, naming it."""
        worker = worker_with()
        with self.assertRaises(SandboxRefusedError) as e:
            await worker.publish_message(make_user_message().reply("x"), endpoint="nope")
        self.assertIn("'nope'", str(e.exception))


class ConfigTests(TestCase):
    def test_generic_worker_needs_an_executable(self):
        """The generic worker refuses a config without an executable."""
        with self.assertRaises(ConfigError) as e:
            Sandbox({"sandbox_id": "x"})
        self.assertEqual(e.exception.key, "executable")

    def test_executable_is_found_on_path(self):
        """A bare program name is resolved on the worker's PATH."""
        worker = Sandbox({"executable": "python3"}, hooks=hooks_with())
        self.assertTrue(worker.executable.startswith("/"))

    def test_missing_executable_is_a_config_error(self):
        """A program that does not exist is named in the error."""
        with self.assertRaises(ConfigError) as e:
            Sandbox({"executable": "no-such-program-here"}, hooks=hooks_with())
        self.assertIn("no-such-program-here", str(e.exception))

    def test_sys_executable_is_accepted(self):
        """An absolute path to a program is taken as it is."""
        self.assertEqual(Sandbox({"executable": sys.executable}, hooks=hooks_with()).executable, sys.executable)
