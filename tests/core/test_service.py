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

from .bodies import hostile_bodies, sample


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
        return json.loads(await d)

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


def user_body(**fields: Any) -> bytes:
    """A valid user message for transport ``tr`` as JSON, with ``fields`` replaced (None removes one)."""
    data = make_user_message(transport_name="tr").to_dict()
    for name, value in fields.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return json.dumps(data).encode()


class HostileBodyTests(TestCase):
    """Bodies that once wedged the worker: each is settled with a reason, and a good message is still answered."""

    timeout = 30

    async def start(self, prefetch: int = 2, max_children: int = 2) -> None:
        self.broker = MemoryBroker(prefetch_count=prefetch)
        self.worker = Sandbox(echo_worker_config("tr", max_children=max_children, messages_per_process=5),
                              broker=self.broker, hooks=hooks_with())
        self.service = WorkerService(self.worker, self.broker)
        await self.service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.service.stop()))

    async def assert_still_answers(self) -> None:
        self.broker.drain("tr.outbound")
        good = make_user_message(transport_name="tr", content="still here")
        await self.broker.publish("tr.inbound", good.to_json().encode())
        d = Deferred.fromCoroutine(self.broker.get("tr.outbound"))
        d.addTimeout(10, reactor)
        self.assertEqual(json.loads(await d)["in_reply_to"], good["message_id"])

    async def settle(self) -> None:
        for _ in range(200):
            if not self.service.in_flight:
                return
            await deferLater(reactor, 0.02, lambda: None)
        self.fail(f"deliveries still in flight: {dict(self.service.counts)}")

    async def test_bodies_that_raised_in_from_json_are_dead_lettered(self) -> None:
        """Bodies that raised TypeError or OverflowError are dead-lettered; more than prefetch of them stop nothing."""
        await self.start(prefetch=2)
        bodies = [b'{"message_type": []}', b'{"message_type": {}}', b"{}",
                  user_body(timestamp="0001-01-01 00:00:00+14:00"),
                  user_body(timestamp="9999-12-31 23:59:59-14:00")]
        for body in bodies:
            await self.publish_inbound(body)
        await self.assert_still_answers()
        await self.settle()
        self.assertEqual(self.broker.drain("tr.inbound.dead"), bodies)
        self.assertEqual(self.service.counts["invalid"], len(bodies))

    async def test_bad_event_bodies_are_dead_lettered(self) -> None:
        """Events that raised in from_json are dead-lettered from <transport>.event too."""
        await self.start(prefetch=1)
        bodies = [b'{"message_type": ["event"]}',
                  json.dumps({"message_version": "20110921", "message_type": "event", "event_type": "ack",
                              "event_id": "e", "user_message_id": "u",
                              "timestamp": "0001-01-01 00:00:00+01:00"}).encode()]
        for body in bodies:
            await self.broker.publish("tr.event", body)
        await self.settle()
        self.assertEqual(self.broker.drain("tr.event.dead"), bodies)
        await self.assert_still_answers()

    async def test_lone_surrogates_do_not_leak_pool_slots(self) -> None:
        """Messages with lone surrogates are answered (with U+FFFD); max_children of them leave the worker serving."""
        await self.start(prefetch=4, max_children=2)
        bodies = [user_body(content="\ud800 half an emoji", transport_metadata={"k\udc00": "\udbff"})
                  for _ in range(4)]
        for body in bodies:
            self.assertIn(b"\\ud800", body)
            await self.publish_inbound(body)
        replies = [json.loads(await self.broker.get("tr.outbound")) for _ in bodies]
        self.assertEqual({r["content"] for r in replies}, {"echo: \ufffd half an emoji"})
        self.assertEqual(replies[0]["transport_metadata"], {"k\ufffd": "\ufffd"})
        await self.settle()
        self.assertEqual(self.service.counts["ok"], 4)
        await self.assert_still_answers()

    async def test_deep_nesting_is_dead_lettered_and_frees_the_pool(self) -> None:
        """Messages nested 850 to 960 deep are dead-lettered naming the nesting, and the worker keeps answering."""
        await self.start(prefetch=6, max_children=2)
        # Built as text: json.loads in a test's deep stack would itself hit the recursion limit.
        # Whether such a body failed to parse or only to encode for the child depended on the stack.
        bodies = [user_body(transport_metadata={"deep": "X"}).replace(b'"X"', b'{"a":' * depth + b"1" + b"}" * depth)
                  for depth in (850, 850, 900, 900, 960, 960)]
        with self.assertLogs("vxsandbox.service", "ERROR") as logs:
            for body in bodies:
                await self.publish_inbound(body)
            await self.assert_still_answers()
            await self.settle()
        self.assertEqual(len(self.broker.drain("tr.inbound.dead")), 6)
        self.assertEqual(len(logs.output), 6, logs.output)
        self.assertTrue(all("nested" in line for line in logs.output), logs.output)

    async def test_non_string_sandbox_id_is_dead_lettered(self) -> None:
        """A sandbox_id of 123, ["x"] or {} is refused and dead-lettered, never run as the config's tenant."""
        await self.start()
        bodies = [user_body(sandbox_id=value) for value in (123, ["x"], {}, True)]
        for body in bodies:
            await self.publish_inbound(body)
        await self.settle()
        self.assertEqual(self.broker.drain("tr.inbound.dead"), bodies)
        self.assertEqual(self.service.counts["refused"], 4)
        self.assertEqual(self.broker.drain("tr.outbound"), [])
        await self.assert_still_answers()

    async def publish_inbound(self, body: bytes) -> None:
        await self.broker.publish("tr.inbound", body)

    async def test_fuzzed_bodies_are_all_settled(self) -> None:
        """3,000 Hypothesis bodies on both queues are each acked or dead-lettered, and a good message is answered."""
        await self.start(prefetch=20, max_children=6)
        bodies = {"inbound": sample(hostile_bodies("tr"), 2000), "event": sample(hostile_bodies("tr", "event"), 1000)}
        total = sum(len(b) for b in bodies.values())
        with self.assertLogs("vxsandbox", "WARNING") as logs:
            for queue, batch in bodies.items():
                for body in batch:
                    await self.broker.publish(f"tr.{queue}", body)
            for _ in range(200 * 60 * 3):
                if sum(self.service.counts.values()) >= total and not self.service.in_flight:
                    break
                await deferLater(reactor, 0.005, lambda: None)
        counts = self.service.counts
        self.assertEqual(sum(counts.values()), total, dict(counts))
        self.assertEqual(self.broker.stats()["unacked"], {"tr.inbound": 0, "tr.event": 0})
        self.assertEqual(self.broker.drain("tr.inbound") + self.broker.drain("tr.event"), [])
        dead = len(self.broker.drain("tr.inbound.dead")) + len(self.broker.drain("tr.event.dead"))
        self.assertEqual(dead, counts["invalid"] + counts["refused"], dict(counts))
        self.assertEqual(counts["failed"], 0, dict(counts))
        self.assertGreater(counts["ok"], 300, dict(counts))
        # Every invalid body was refused with a MessageError naming what is wrong, never a surprise exception.
        self.assertEqual([r.getMessage()[:200] for r in logs.records if r.exc_info], [])
        await self.assert_still_answers()

    test_fuzzed_bodies_are_all_settled.timeout = 240  # type: ignore[attr-defined]

class OpenFilesLimitTests(TestCase):
    def setUp(self) -> None:
        import resource
        self.original = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, self.original)

    async def test_start_raises_the_soft_open_files_limit_to_the_hard_one(self) -> None:
        """A worker starting under a low soft RLIMIT_NOFILE raises it to its hard limit (children stay at theirs)."""
        import resource
        soft, hard = self.original
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        broker = MemoryBroker()
        worker = Sandbox(echo_worker_config("tr"), broker=broker, hooks=hooks_with())
        service = WorkerService(worker, broker)
        await service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(service.stop()))
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE), (hard, hard))
        self.assertEqual(worker.rlimits[resource.RLIMIT_NOFILE][0], 15)
