"""The Redis backend when Redis goes away: quick failures with reasons, then recovery on the same port.

These tests start their own redis-server on a free port and kill it; the
shared Redis on 6379 is never touched.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import txredisapi
from twisted.trial.unittest import TestCase

from .helpers import KVWorkerMixin, RedisServer, sleep

pytestmark = pytest.mark.redis

UNAVAILABLE = "kv backend unavailable: "


async def wait_connected(kv: Any, timeout: float = 10) -> None:
    """Wait until the kv resource's Redis backend has a live connection again."""
    deadline = time.monotonic() + timeout
    while not kv.backend._redis._factory.size:
        assert time.monotonic() < deadline, f"no connection to Redis within {timeout} s"
        await sleep(0.05)


class RedisOutageTests(KVWorkerMixin, TestCase):
    """Commands fail fast with a reason while Redis is down and succeed once it is back."""

    def setUp(self) -> None:
        self.server = RedisServer()
        self.addCleanup(self.server.kill)

    password = ""

    def kv_options(self) -> dict[str, Any]:
        return {"redis_manager": {"url": f"redis://:{self.password}@127.0.0.1:{self.server.port}/0"
                                         if self.password else f"redis://127.0.0.1:{self.server.port}/0",
                                  "key_prefix": "outage",
                                  "connect_timeout": 1, "command_timeout": 1, "reconnect_max_delay": 0.5}}

    async def test_redis_restarted_mid_test(self) -> None:
        """Killed Redis: every command fails within a second with a reason; restarted: commands succeed again."""
        await self.server.start()
        worker = await self.make_worker()
        kv = worker.resources.resources["kv"]
        replies = await self.run_child(worker, [{"cmd": "kv.set", "key": "k", "value": 1},
                                                {"cmd": "kv.get", "key": "k"}])
        assert [r["success"] for r in replies] == [True, True]

        await self.server.kill()
        await sleep(0.1)
        commands: list[dict[str, Any]] = [{"cmd": "kv.set", "key": "k", "value": 2}, {"cmd": "kv.get", "key": "k"},
                    {"cmd": "kv.incr", "key": "n"}, {"cmd": "kv.delete", "key": "k"}]
        started = time.monotonic()
        replies = await self.run_child(worker, commands)
        down_run = time.monotonic() - started
        assert [r["success"] for r in replies] == [False] * 4
        assert all(r["reason"].startswith(UNAVAILABLE) for r in replies), replies
        assert f"127.0.0.1:{self.server.port}/0" in replies[0]["reason"]
        assert down_run < 3, down_run

        await self.server.start()
        await wait_connected(kv)
        replies = await self.run_child(worker, [{"cmd": "kv.set", "key": "k", "value": 3},
                                                {"cmd": "kv.incr", "key": "n"},
                                                {"cmd": "kv.get", "key": "k"}])
        assert [r["success"] for r in replies] == [True, True, True], replies
        assert (replies[1]["value"], replies[2]["value"]) == (1, 3)

    async def test_redis_down_from_the_start(self) -> None:
        """A worker whose Redis never answered starts, and kv commands fail with a reason instead of hanging."""
        started = time.monotonic()
        worker = await self.make_worker()
        assert time.monotonic() - started < 2.5
        started = time.monotonic()
        replies = await self.run_child(worker, [{"cmd": "kv.get", "key": "k"}])
        assert time.monotonic() - started < 3
        assert replies[0]["success"] is False
        assert replies[0]["reason"] == (f"{UNAVAILABLE}not connected to Redis at 127.0.0.1:{self.server.port}/0 "
                                        "(reconnecting)")
        await self.server.start()
        kv = worker.resources.resources["kv"]
        await wait_connected(kv)
        replies = await self.run_child(worker, [{"cmd": "kv.set", "key": "k", "value": "late"},
                                                {"cmd": "kv.get", "key": "k"}])
        assert replies[1]["value"] == "late"

    async def test_a_stalled_redis_fails_commands_after_command_timeout(self) -> None:
        """Redis that accepts but does not answer (DEBUG SLEEP) fails commands after command_timeout, then recovers.

        The stall outlasts the command timeout, the reconnect delay and the
        reconnected connection's own SELECT, whose timeout made txredisapi
        stop reconnecting for good.
        """
        await self.server.start()
        worker = await self.make_worker()
        kv = worker.resources.resources["kv"]
        other = await txredisapi.Connection("127.0.0.1", self.server.port, reconnect=False)
        self.addCleanup(other.disconnect)
        stall = other.execute_command("DEBUG", "SLEEP", "4")
        started = time.monotonic()
        replies = await self.run_child(worker, [{"cmd": "kv.get", "key": "k"}])
        assert 0.9 < time.monotonic() - started < 2.4
        assert replies[0]["reason"] == (f"{UNAVAILABLE}Redis at 127.0.0.1:{self.server.port}/0 did not answer get "
                                        "within 1 s")
        await stall
        await wait_connected(kv)
        replies = await self.run_child(worker, [{"cmd": "kv.incr", "key": "n"}])
        assert replies[0]["value"] == 1

    async def test_a_refused_password_is_retried_until_redis_accepts_it(self) -> None:
        """AUTH refused: kv fails with a reason and a warning says why; once Redis takes the password, kv works."""
        await self.server.start("--requirepass", "old-secret")
        self.password = "new-secret"
        with self.assertLogs("vxsandbox_resources_kv.redis_backend", "WARNING") as logged:
            worker = await self.make_worker()
            replies = await self.run_child(worker, [{"cmd": "kv.get", "key": "k"}])
        assert replies[0]["reason"] == (f"{UNAVAILABLE}not connected to Redis at 127.0.0.1:{self.server.port}/0 "
                                        "(reconnecting)")
        assert any("could not auth" in line for line in logged.output), logged.output
        admin = await txredisapi.Connection("127.0.0.1", self.server.port, reconnect=False, password="old-secret")
        self.addCleanup(admin.disconnect)
        await admin.execute_command("CONFIG", "SET", "requirepass", "new-secret")
        kv = worker.resources.resources["kv"]
        await wait_connected(kv)
        replies = await self.run_child(worker, [{"cmd": "kv.incr", "key": "n"}])
        assert replies[0]["value"] == 1
