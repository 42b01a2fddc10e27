"""Tests for the generic worker: picking the sandbox_id, refusing messages, publishing, events."""

from __future__ import annotations

import sys

from twisted.trial.unittest import TestCase

from vxsandbox_core import Sandbox, SandboxRefusedError
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.message import TransportEvent
from vxsandbox_core.testing import (
    RecordingBroker,
    echo_worker_config,
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


class HostileMessageTests(TestCase):
    timeout = 30

    def test_non_string_sandbox_id_is_refused(self):
        """A sandbox_id of 123, ["x"], {} or true is refused naming the field, not mapped to the config's tenant."""
        worker = worker_with()
        for value in (123, ["x"], {}, True):
            with self.assertRaises(SandboxRefusedError) as e:
                worker.sandbox_id_for_message(make_user_message(sandbox_id=value))
            self.assertIn("field 'sandbox_id': expected a string", str(e.exception))

    async def test_message_that_cannot_be_sent_is_refused_and_frees_its_child(self):
        """A message that cannot be encoded for the child is refused; max_children of them leave the worker serving."""
        worker = Sandbox(echo_worker_config("tr", max_children=1, messages_per_process=5), broker=RecordingBroker(),
                         hooks=hooks_with())
        await worker.setup()
        self.addCleanup(worker.teardown)
        deep: dict = {}
        inner = deep
        for _ in range(5000):
            inner["a"] = {}
            inner = inner["a"]
        with self.assertLogs("vxsandbox.worker", "WARNING") as logs:
            for _ in range(3):
                outcome = await worker.process_message(make_user_message(transport_name="tr", transport_metadata=deep))
                self.assertEqual(outcome, "refused")
        self.assertTrue(all("could not be sent to the sandbox: RecursionError" in line for line in logs.output),
                        logs.output)
        self.assertEqual(worker.pool.busy, {})
        good = make_user_message(transport_name="tr", content="after")
        self.assertEqual(await worker.process_message(good), "ok")
        self.assertEqual(worker.broker.messages()[-1]["in_reply_to"], good["message_id"])
