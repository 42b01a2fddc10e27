"""Tests for vxsandbox_core.service on the in-memory broker with real sandboxed children."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from vxsandbox_core.brokers.memory import MemoryBroker
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.message import TransportEvent
from vxsandbox_core.service import WorkerService
from vxsandbox_core.testing import echo_worker_config, hooks_with, make_user_message
from vxsandbox_core.worker import Sandbox


class ServiceTests(TestCase):
    async def start(self, delay: float = 0.0, prefetch: int = 20, **extra: Any) -> None:
        self.broker = MemoryBroker(prefetch_count=prefetch)
        self.worker = Sandbox(echo_worker_config("tr", delay, **extra), broker=self.broker, hooks=hooks_with())
        self.service = WorkerService(self.worker, self.broker)
        await self.service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.service.stop()))

    async def publish(self, queue: str, body: bytes) -> None:
        await self.broker.publish(f"tr.{queue}", body)

    async def next_outbound(self) -> dict[str, Any]:
        d = Deferred.fromCoroutine(self.broker.get("tr.outbound"))
        d.addTimeout(10, reactor)
        return json.loads((await d).body)

    async def test_message_gets_reply(self) -> None:
        """A user message runs the sandbox and its reply is published to <transport>.outbound."""
        await self.start()
        msg = make_user_message(transport_name="tr", content="hi")
        await self.publish("inbound", msg.to_json().encode())
        reply = await self.next_outbound()
        self.assertEqual(reply["in_reply_to"], msg["message_id"])
        self.assertEqual(reply["content"], "echo: hi")
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.service.counts["ok"], 1)

    async def test_event_reaches_sandbox(self) -> None:
        """An event on <transport>.event reaches the child as inbound-event."""
        await self.start()
        event = TransportEvent(event_type="ack", user_message_id="m1", sent_message_id="x")
        await self.publish("event", event.to_json().encode())
        probe = await self.next_outbound()
        self.assertEqual(probe["to_addr"], "event-probe")
        self.assertEqual(json.loads(probe["content"])["event_id"], event["event_id"])

    async def test_invalid_body_dead_lettered_and_next_processed(self) -> None:
        """A body that is no Vumi message goes to <queue>.dead; the next good one is still answered."""
        await self.start()
        await self.publish("inbound", b"{not json")
        await self.publish("inbound", make_user_message(transport_name="tr").to_json().encode())
        await self.next_outbound()
        self.assertEqual(self.broker.drain("tr.inbound.dead"), [b"{not json"])
        self.assertEqual(self.service.counts["invalid"], 1)

    async def test_wrong_kind_on_queue_dead_lettered(self) -> None:
        """An event published to the inbound queue is invalid there and dead-lettered."""
        await self.start()
        event = TransportEvent(event_type="ack", user_message_id="m1", sent_message_id="x")
        await self.publish("inbound", event.to_json().encode())
        self.assertEqual(len(self.broker.drain("tr.inbound.dead")), 1)

    async def test_refused_dead_lettered(self) -> None:
        """A message for which no sandbox_id is known is refused and dead-lettered."""
        await self.start(sandbox_id=None)
        await self.publish("inbound", make_user_message(transport_name="tr").to_json().encode())
        for _ in range(50):
            if self.service.counts["refused"]:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(len(self.broker.drain("tr.inbound.dead")), 1)
        self.assertEqual(self.broker.drain("tr.outbound"), [])

    async def test_stop_waits_for_runs_in_flight(self) -> None:
        """stop() lets running sandboxes finish; their replies are published and deliveries acked."""
        await self.start(delay=0.3, prefetch=5)
        for i in range(3):
            await self.publish("inbound", make_user_message(transport_name="tr", content=str(i)).to_json().encode())
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(self.service.in_flight), 3)
        await self.service.stop()
        self.assertEqual(len(self.broker.drain("tr.outbound")), 3)
        self.assertEqual(self.service.counts["ok"], 3)
        self.assertEqual(self.broker.stats()["queues"].get("tr.inbound"), 0)

    async def test_prefetch_bounds_concurrency(self) -> None:
        """No more than prefetch_count runs are in flight at once per queue."""
        await self.start(delay=0.2, prefetch=2)
        for i in range(5):
            await self.publish("inbound", make_user_message(transport_name="tr", content=str(i)).to_json().encode())
        self.assertEqual(len(self.service.in_flight), 2)
        for _ in range(5):
            await self.next_outbound()

    def test_transport_name_required(self) -> None:
        """A worker without transport_name cannot be served from a broker."""
        worker = Sandbox(echo_worker_config(None), broker=None, hooks=hooks_with())  # type: ignore[arg-type]
        with self.assertRaises(ConfigError):
            WorkerService(worker, MemoryBroker())


class ShutdownTests(TestCase):
    async def test_run_past_shutdown_timeout_is_killed_and_requeued(self) -> None:
        """A run still going shutdown_timeout after stop is killed, and its message goes back to the queue."""
        broker = MemoryBroker()
        worker = Sandbox(echo_worker_config("tr", 30, shutdown_timeout=0.5, timeout=60), broker=broker,
                         hooks=hooks_with())
        service = WorkerService(worker, broker)
        await service.start()
        msg = make_user_message(transport_name="tr", content="slow")
        await broker.publish("tr.inbound", msg.to_json().encode())
        await deferLater(reactor, 0.3, lambda: None)
        started = reactor.seconds()
        await service.stop()
        self.assertLess(reactor.seconds() - started, 3)
        self.assertEqual(service.counts["interrupted"], 1)
        self.assertEqual(worker.pool.live, 0)
        self.assertEqual([json.loads(b)["message_id"] for b in broker.drain("tr.inbound")], [msg["message_id"]])
        self.assertEqual(broker.drain("tr.outbound"), [])

    async def test_run_within_shutdown_timeout_finishes_and_is_acked(self) -> None:
        """A run that ends within shutdown_timeout is answered and acked, not requeued."""
        broker = MemoryBroker()
        worker = Sandbox(echo_worker_config("tr", 0.5, shutdown_timeout=5), broker=broker, hooks=hooks_with())
        service = WorkerService(worker, broker)
        await service.start()
        await broker.publish("tr.inbound", make_user_message(transport_name="tr").to_json().encode())
        await deferLater(reactor, 0.2, lambda: None)
        await service.stop()
        self.assertEqual(service.counts["ok"], 1)
        self.assertEqual(len(broker.drain("tr.outbound")), 1)
        self.assertEqual(broker.drain("tr.inbound"), [])
