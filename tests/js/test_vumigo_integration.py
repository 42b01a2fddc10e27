"""The vumigo_v02 example app as deployed: RabbitMQ carries its messages, Redis keeps its users' state."""

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
from vxsandbox_core.service import WorkerService
from vxsandbox_core.testing import hooks_with
from vxsandbox_js import StandaloneJsFileSandbox

from .helpers import EXAMPLES

pytestmark = [pytest.mark.node, pytest.mark.rabbitmq, pytest.mark.redis]

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
APP_DIR = os.path.join(EXAMPLES, "vumigo_app")

MENU = "Welcome to Tea Time! What would you like?\n1. Tea\n2. Coffee"


class VumigoOverRabbitMQTests(TestCase):

    timeout = 120

    def setUp(self) -> None:
        if not os.path.isdir(os.path.join(APP_DIR, "node_modules", "vumigo_v02")):
            pytest.fail("examples/vumigo_app/node_modules is missing: run `npm ci --prefix examples/vumigo_app`")
        self.transport = f"vxjs_tea_{uuid.uuid4().hex[:12]}"
        self.prefix = f"test-js-{uuid.uuid4().hex}"
        self.replies: DeferredQueue[dict[str, Any]] = DeferredQueue()

    def worker_config(self) -> dict[str, Any]:
        """The config a tenant's operator would write (as in the design's YAML example)."""
        return {
            "worker": "js-standalone",
            "transport_name": self.transport,
            "sandbox_id": "tea",
            "javascript_file": os.path.join(APP_DIR, "app.js"),
            "app_context": "{require: require}",
            "sandbox": {
                "kv": {"cls": "kv", "redis_manager": {"url": "redis://127.0.0.1:6379/0", "key_prefix": self.prefix}},
                "outbound": {"cls": "outbound"},
                "config": {"cls": "config", "values": {"config": {"name": "Tea Time"}}},
                "metrics": {"cls": "metrics"},
            },
        }

    async def start_worker(self) -> WorkerService:
        broker = AmqpBroker(AMQP_URL, prefetch_count=4)
        worker = StandaloneJsFileSandbox(self.worker_config(), broker=broker, hooks=hooks_with())
        service = WorkerService(worker, broker)
        await service.start()
        return service

    async def start_transport(self) -> AmqpBroker:
        """A stand-in transport: publishes inbound messages and collects the app's outbound replies."""
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

    async def redis_users(self) -> dict[str, Any]:
        conn = await txredisapi.Connection("127.0.0.1", 6379, reconnect=False)
        try:
            names = await conn.keys(f"{self.prefix}:sandboxes#tea#users.*")
            return {name.rsplit("#", 1)[1]: json.loads(await conn.get(name)) for name in names}
        finally:
            await conn.disconnect()

    async def test_two_users_play_independent_sessions(self) -> None:
        """Menu, choice and closing end text per user; state lives in Redis, surviving a worker restart."""
        transport = await self.start_transport()
        alice, bob = "+27820000001", "+27820000002"
        first = await self.start_worker()

        reply = await self.dial(transport, alice, None, "new")
        assert (reply["content"], reply["session_event"]) == (MENU, None)
        reply = await self.dial(transport, bob, None, "new")
        assert (reply["content"], reply["session_event"]) == (MENU, None)
        reply = await self.dial(transport, alice, "1", "resume")
        assert reply["content"] == "Milk with your tea?\n1. Yes please\n2. No thanks"
        await first.stop()

        # A fresh worker (new processes, no shared memory) continues both sessions from Redis.
        users = await self.redis_users()
        assert set(users) == {f"users.Tea Time.{alice}", f"users.Tea Time.{bob}"}
        assert users[f"users.Tea Time.{alice}"]["answers"] == {"states:start": "tea"}
        second = await self.start_worker()
        self.addCleanup(second.stop)

        reply = await self.dial(transport, bob, "2", "resume")
        assert reply["content"] == "Milk with your coffee?\n1. Yes please\n2. No thanks"
        reply = await self.dial(transport, alice, "2", "resume")
        assert (reply["content"], reply["session_event"]) == ("One tea black coming up. Thank you!", "close")
        reply = await self.dial(transport, bob, "1", "resume")
        assert (reply["content"], reply["session_event"]) == ("One coffee with milk coming up. Thank you!", "close")
        await second.stop()  # lets the last run finish and be acked
        assert dict(second.counts) == {"ok": 3}
        assert dict(first.counts) == {"ok": 3}
