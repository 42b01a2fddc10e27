"""The contacts, groups and optout resources on real Redis (127.0.0.1:6379): the shared tests plus the key scheme."""

from __future__ import annotations

import json
from typing import Any

import pytest
import txredisapi
from twisted.trial.unittest import TestCase

from .cases import ContactsCommandCases
from .helpers import delete_prefixed, require_redis, unique_prefix

pytestmark = pytest.mark.redis


class RedisStoreCommandTests(ContactsCommandCases, TestCase):
    """The shared command tests, on ``backend: redis`` with a key_prefix of the test's own."""

    def setUp(self) -> None:
        require_redis()
        self.prefix = unique_prefix()
        self.addCleanup(delete_prefixed, self.prefix)

    def store_options(self) -> dict[str, Any]:
        return {"redis_manager": {"url": "redis://127.0.0.1:6379/0", "key_prefix": self.prefix}}

    async def test_records_in_redis_follow_the_documented_scheme(self) -> None:
        """Operators find a tenant's contacts, address index, groups and opt-outs under its escaped sandbox_id."""
        worker = await self.make_worker()
        contact = (await self.one(worker, "contacts.get_or_create", addr="+27831234567",
                                  sandbox_id="tea#%shop"))["contact"]
        group = (await self.one(worker, "groups.get_or_create_by_name", name="g", sandbox_id="tea#%shop"))["group"]
        await self.one(worker, "optout.optout", address_type="msisdn", address_value="+1", message_id="m",
                       sandbox_id="tea#%shop")
        conn = await txredisapi.Connection("127.0.0.1", 6379, reconnect=False, convertNumbers=False)
        try:
            names = sorted(await conn.keys(self.prefix + ":*"))
            stored = await conn.hget(f"{self.prefix}:contacts#tea%23%25shop", contact["key"])
            index = await conn.hgetall(f"{self.prefix}:contacts-addr#tea%23%25shop")
            optouts = await conn.hkeys(f"{self.prefix}:optouts#tea%23%25shop")
        finally:
            await conn.disconnect()
        assert names == [f"{self.prefix}:{tag}#tea%23%25shop"
                         for tag in ("contact-groups", "contacts", "contacts-addr", "optouts")]
        assert json.loads(stored) == contact
        assert index == {"msisdn:+27831234567": contact["key"]}
        assert optouts == ['["msisdn","+1"]']
        assert group["key"]

    async def test_racing_workers_respect_the_contact_cap(self) -> None:
        """Two workers creating contacts at once on one Redis never exceed max_contacts between them."""
        from twisted.internet.defer import gatherResults

        workers = [await self.make_worker(max_contacts=5) for _ in range(2)]
        requests = [[{"cmd": "contacts.get_or_create", "addr": f"+{w}{i}"} for i in range(6)] for w in range(2)]

        async def run(i: int) -> list[dict[str, Any]]:
            return await self.run_child(workers[i], requests[i])

        from twisted.internet.defer import ensureDeferred
        results = await gatherResults([ensureDeferred(run(0)), ensureDeferred(run(1))])
        created = sum(r["success"] for replies in results for r in replies)
        assert created == 5, results
