"""The vumigo_v02 example app as deployed: RabbitMQ carries its messages, Redis keeps its users' state."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import txredisapi

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.service import WorkerService
from vxsandbox_core.testing import hooks_with
from vxsandbox_js import StandaloneJsFileSandbox

from ..ussd_app import AMQP_URL, APP_DIR, UssdAppOverRabbitMQ

pytestmark = [pytest.mark.node, pytest.mark.rabbitmq, pytest.mark.redis]


MENU = "Welcome to Tea Time! What would you like?\n1. Tea\n2. Coffee"


class VumigoOverRabbitMQTests(UssdAppOverRabbitMQ):
    """examples/vumigo_app/app.js as deployed: RabbitMQ carries its messages, Redis keeps its users' state."""

    transport_prefix = "vxjs_tea"

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
