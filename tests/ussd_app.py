"""A stand-in USSD transport on RabbitMQ, for tests that play an example toolkit app through a real worker."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
import txredisapi
from twisted.internet.defer import DeferredQueue
from twisted.trial.unittest import TestCase

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.brokers.amqp.admin import delete_queues
from vxsandbox_core.message import Message, TransportUserMessage

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: the example toolkit app's folder (its node_modules come from `npm ci`)
APP_DIR = os.path.join(os.path.dirname(__file__), "..", "examples", "vumigo_app")


class UssdAppOverRabbitMQ(TestCase):
    """Base of tests playing USSD sessions: a transport of their own, Redis keys under a prefix of their own."""

    timeout = 120
    #: the start of this test's transport name (a random part follows)
    transport_prefix = "vxapp"

    def setUp(self) -> None:
        if not os.path.isdir(os.path.join(APP_DIR, "node_modules", "vumigo_v02")):
            pytest.fail("examples/vumigo_app/node_modules is missing: run `npm ci --prefix examples/vumigo_app`")
        self.transport = f"{self.transport_prefix}_{uuid.uuid4().hex[:12]}"
        self.prefix = f"test-{self.transport_prefix}-{uuid.uuid4().hex}"
        self.replies: DeferredQueue[dict[str, Any]] = DeferredQueue()

    async def start_transport(self) -> AmqpBroker:
        """Connect the stand-in transport: it publishes inbound messages and collects the app's replies."""
        transport = AmqpBroker(AMQP_URL, connection_name="test-transport")
        await transport.connect()

        async def on_reply(delivery: Any) -> None:
            self.replies.put(json.loads(delivery.body))
            await delivery.ack()

        await transport.consume(f"{self.transport}.outbound", on_reply)
        self.addCleanup(self.cleanup, transport)
        return transport

    async def cleanup(self, transport: AmqpBroker) -> None:
        await delete_queues(transport, f"{self.transport}.inbound", f"{self.transport}.event",
                            f"{self.transport}.outbound")
        await transport.close()
        conn = await txredisapi.Connection("127.0.0.1", 6379, reconnect=False)
        try:
            keys = await conn.keys(self.prefix + ":*")
            if keys:
                await conn.delete(keys)
        finally:
            await conn.disconnect()

    async def dial(self, transport: AmqpBroker, user: str, content: str | None, event: str) -> dict[str, Any]:
        """Send one USSD message from ``user`` and return the app's reply to it."""
        msg = TransportUserMessage(to_addr="*120*8864#", from_addr=user, transport_name=self.transport,
                                   transport_type="ussd", content=content, session_event=event)
        await transport.publish(f"{self.transport}.inbound", msg.to_json().encode("utf-8"))
        reply = await self.replies.get()
        assert reply["in_reply_to"] == msg["message_id"]
        assert reply["to_addr"] == user
        Message.from_json(json.dumps(reply))  # a valid Vumi message a transport can parse
        return reply
