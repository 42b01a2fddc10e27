"""A vumigo_v02 app using im.contacts and im.groups plays USSD sessions over RabbitMQ, its contacts in Redis."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import txredisapi

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.service import WorkerService
from vxsandbox_core.testing import hooks_with

from ..ussd_app import AMQP_URL, APP_DIR, UssdAppOverRabbitMQ

# the vumigo_v02 worker lives in vxsandbox-js, which this distribution does not depend on
vxsandbox_js = pytest.importorskip("vxsandbox_js")

pytestmark = [pytest.mark.node, pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.distributions("vxsandbox-js")]

class ContactsAppOverRabbitMQTests(UssdAppOverRabbitMQ):
    """examples/vumigo_app/contacts_app.js as deployed: RabbitMQ carries its messages, Redis keeps its contacts."""

    transport_prefix = "vxcontacts"

    def worker_config(self) -> dict[str, Any]:
        redis = {"url": "redis://127.0.0.1:6379/0", "key_prefix": self.prefix}
        return {
            "worker": "js-standalone",
            "transport_name": self.transport,
            "sandbox_id": "tea",
            "javascript_file": os.path.join(APP_DIR, "contacts_app.js"),
            "app_context": "{require: require}",
            "sandbox": {
                "kv": {"cls": "kv", "redis_manager": redis},
                "contacts": {"cls": "go.apps.jsbox.contacts.ContactsResource", "redis_manager": redis},
                "groups": {"cls": "go.apps.jsbox.contacts.GroupsResource", "redis_manager": redis},
                "outbound": {"cls": "outbound"},
                "config": {"cls": "config", "values": {"config": {"name": "Tea Time"}}},
            },
        }

    async def start(self) -> tuple[WorkerService, AmqpBroker]:
        broker = AmqpBroker(AMQP_URL, prefetch_count=4)
        worker = vxsandbox_js.StandaloneJsFileSandbox(self.worker_config(), broker=broker, hooks=hooks_with())
        service = WorkerService(worker, broker)
        await service.start()
        transport = await self.start_transport()
        return service, transport

    async def test_new_user_is_saved_with_extras_and_joins_a_group(self) -> None:
        """for_user creates the contact, save stores its name extra, groups.get creates the group, sizeOf counts."""
        service, transport = await self.start()
        self.addCleanup(service.stop)
        alice, bob = "27820000001", "+27820000002"
        reply = await self.dial(transport, alice, None, "new")
        assert reply["content"] == "Hello! What is your name?"
        reply = await self.dial(transport, alice, "Zoë", "resume")
        assert (reply["content"], reply["session_event"]) == ("Thanks Zoë! Tea lovers now has 1 member(s).", "close")
        await self.dial(transport, bob, None, "new")
        reply = await self.dial(transport, bob, "Sipho", "resume")
        assert reply["content"] == "Thanks Sipho! Tea lovers now has 2 member(s)."
        reply = await self.dial(transport, alice, None, "new")
        assert (reply["content"], reply["session_event"]) == ("Welcome back, Zoë!", "close")

        conn = await txredisapi.Connection("127.0.0.1", 6379, reconnect=False, convertNumbers=False)
        try:
            contacts = [json.loads(v) for v in await conn.hvals(f"{self.prefix}:contacts#tea")]
            groups = [json.loads(v) for v in await conn.hvals(f"{self.prefix}:contact-groups#tea")]
        finally:
            await conn.disconnect()
        assert [g["name"] for g in groups] == ["Tea lovers"]
        by_msisdn = {c["msisdn"]: c for c in contacts}
        assert set(by_msisdn) == {"+27820000001", "+27820000002"}  # one leading + for every msisdn
        assert by_msisdn["+27820000001"]["extras-name"] == "Zoë"
        assert by_msisdn["+27820000001"]["groups"] == [groups[0]["key"]]
        assert by_msisdn["+27820000001"]["user_account"] == "tea"
        await service.stop()
        assert dict(service.counts) == {"ok": 5}
