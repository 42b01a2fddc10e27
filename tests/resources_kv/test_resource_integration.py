"""The kv resource on real Redis (127.0.0.1:6379): the shared command tests plus Redis-only checks."""

from __future__ import annotations

from typing import Any

import pytest
import txredisapi
from twisted.trial.unittest import TestCase

from vxsandbox_resources_kv import KeyScheme

from .cases import KVCommandCases
from .helpers import REDIS_HOST, REDIS_PORT, delete_prefixed, require_redis, sleep, unique_prefix

pytestmark = pytest.mark.redis


class RedisBackendCommandTests(KVCommandCases, TestCase):
    """The shared command tests, on ``backend: redis`` with a key_prefix of the test's own."""

    def setUp(self) -> None:
        require_redis()
        self.prefix = unique_prefix()
        self.addCleanup(delete_prefixed, self.prefix)

    def kv_options(self) -> dict[str, Any]:
        return {"redis_manager": {"url": f"redis://{REDIS_HOST}:{REDIS_PORT}/0", "key_prefix": self.prefix}}

    async def racing_resources(self, **options: Any) -> list[Any]:
        """Two workers' kv resources on the same Redis and prefix, as two worker processes would be."""
        workers = [await self.make_worker(**options) for _ in range(2)]
        return [w.resources.resources["kv"] for w in workers]

    async def test_keys_in_redis_follow_the_documented_scheme(self) -> None:
        """Operators find the value at prefix:sandboxes#<id>#<key> as JSON and the index beside it."""
        worker = await self.make_worker()
        await self.run_child(worker, [{"cmd": "kv.set", "key": "users.+27#1", "value": {"name": "Zoë"}},
                                      {"cmd": "kv.set", "key": "tmp", "value": 1, "seconds": 60}],
                             sandbox_id="tea#%shop")
        conn = await txredisapi.Connection(REDIS_HOST, REDIS_PORT, reconnect=False, convertNumbers=False)
        try:
            names = sorted(await conn.keys(self.prefix + ":*"))
            value = await conn.get(f"{self.prefix}:sandboxes#tea%23%25shop#users.+27#1")
            index = await conn.zrange(f"{self.prefix}:sandbox-keys#tea%23%25shop", 0, -1, withscores=True)
            ttl = await conn.execute_command("PTTL", f"{self.prefix}:sandboxes#tea%23%25shop#tmp")
        finally:
            await conn.disconnect()
        assert names == [f"{self.prefix}:sandbox-keys#tea%23%25shop", f"{self.prefix}:sandboxes#tea%23%25shop#tmp",
                         f"{self.prefix}:sandboxes#tea%23%25shop#users.+27#1"]
        assert value == '{"name":"Zoë"}'
        assert 59_000 < ttl <= 60_000
        scores = dict(index)
        assert scores["users.+27#1"] == float("inf")
        assert KeyScheme(self.prefix).parse_data_key(names[2]) == ("tea#%shop", "users.+27#1")

    async def test_count_forgets_keys_deleted_or_expired_in_redis(self) -> None:
        """The count store drops keys that expired, so the seed's never-decremented count cannot recur."""
        worker = await self.make_worker()
        kv = worker.resources.resources["kv"]
        await self.run_child(worker, [{"cmd": "kv.set", "key": f"k{i}", "value": i, "seconds": 1}
                                      for i in range(3)] + [{"cmd": "kv.set", "key": "stay", "value": 1}])
        assert await kv.backend.count("tenant-a") == 4  # type: ignore[attr-defined]
        await sleep(1.2)
        assert await kv.backend.count("tenant-a") == 1  # type: ignore[attr-defined]
