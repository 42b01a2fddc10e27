"""Hostile input from the broker: every delivery is settled with a reason and the worker keeps serving."""

from __future__ import annotations

import json

import pytest
from twisted.trial.unittest import TestCase

from .harness import FaultBench, vumi_message

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.node]


class HostileInputTests(FaultBench, TestCase):
    """Bodies no transport should send, and messages for tenants nobody configured."""

    timeout = 60

    async def send_bad(self, bodies: list[bytes]) -> None:
        await self.open_bench()
        await self.start_worker()
        await self.publish(*bodies)
        await self.wait_settled(len(bodies))
        await self.still_serves()
        self.assertEqual(self.service.counts["invalid"], len(bodies))
        await self.assert_dead_letters(len(bodies))
        lines = [r.getMessage() for r in self.records.records if "invalid message" in r.getMessage()]
        self.assertEqual(len(lines), len(bodies), lines)
        self.assertTrue(all("dead-lettered" in line for line in lines))
        self.assert_no_tracebacks()

    async def test_bodies_that_are_not_json(self) -> None:
        """Garbage, invalid UTF-8 and empty bodies are dead-lettered, one log line each."""
        await self.send_bad([b"not json", b"\xff\xfe\x00garbage", b"", b"{\"truncated\": "])

    async def test_json_that_is_not_a_message(self) -> None:
        """JSON arrays, numbers, strings and foreign objects are dead-lettered."""
        await self.send_bad([b"[]", b"42", b'"hello"', b'{"hello": "world"}', b"null"])

    async def test_messages_missing_required_fields(self) -> None:
        """A user message without to_addr, from_addr or transport_name, or with a bad timestamp, is dead-lettered."""
        base = vumi_message("x", "ok")
        bodies = []
        for field in ("to_addr", "from_addr", "transport_name"):
            broken = dict(base)
            del broken[field]
            bodies.append(json.dumps(broken).encode())
        bodies.append(json.dumps(dict(base, timestamp="yesterday")).encode())
        bodies.append(json.dumps(dict(base, message_type="event")).encode())
        await self.send_bad(bodies)

    async def test_huge_message(self) -> None:
        """A 20 MiB message reaches the app and is answered; the worker serves on."""
        await self.open_bench()
        await self.start_worker(timeout=20)
        huge = vumi_message(self.tn, "ok", transport_metadata={"blob": "z" * (20 * 1024 * 1024)})
        await self.publish(huge)
        await self.wait_settled(1, timeout=60)
        await self.still_serves()
        self.assertEqual([r["content"] for r in self.replies_to([huge])], ["ok"])
        self.assertEqual(await self.dead_letters(), 0)
        self.assert_no_tracebacks()

    async def test_message_for_unknown_sandbox_id(self) -> None:
        """A message naming a tenant nobody set up runs in that tenant's own empty kv space, not another's."""
        await self.open_bench()
        await self.start_worker()
        known = [vumi_message(self.tn, "kv", sandbox_id="known") for _ in range(2)]
        for msg in known:
            await self.publish(msg)
            await self.wait_replies([msg])
        stranger = vumi_message(self.tn, "kv", sandbox_id="never-configured")
        await self.publish(stranger)
        await self.wait_replies([stranger])
        self.assertEqual([r["content"] for r in self.replies_to(known)], ["visits 1", "visits 2"])
        self.assertEqual(self.replies_to([stranger])[0]["content"], "visits 1")

    async def test_message_without_any_sandbox_id(self) -> None:
        """With no sandbox_id in the message nor the config, the message is refused and dead-lettered."""
        await self.open_bench()
        await self.start_worker(sandbox_id=None)
        orphan = vumi_message(self.tn, "ok", sandbox_id=None)
        await self.publish(orphan)
        await self.wait_settled(1)
        self.assertEqual(self.service.counts["refused"], 1)
        await self.assert_dead_letters(1)
        await self.still_serves()
        refused = [r.getMessage() for r in self.records.records if "refused" in r.getMessage()]
        self.assertTrue(refused and all("sandbox_id" in line or "dead-lettered" in line for line in refused))
        self.assert_no_tracebacks()
