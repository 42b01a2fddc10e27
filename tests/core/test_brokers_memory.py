"""Tests for vxsandbox_core.brokers.memory: the in-memory broker's queue semantics."""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from vxsandbox_core.brokers import Broker, BrokerError
from vxsandbox_core.brokers.memory import MemoryBroker, MemoryDelivery


def run(test: SynchronousTestCase, coro) -> object:  # type: ignore[no-untyped-def]
    return test.successResultOf(ensureDeferred(coro))


class MemoryBrokerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.broker = MemoryBroker(prefetch_count=2)
        run(self, self.broker.connect())

    def test_is_a_broker(self) -> None:
        """The memory broker satisfies the Broker interface."""
        self.assertIsInstance(self.broker, Broker)

    def test_unconsumed_messages_wait(self) -> None:
        """Messages on a queue nobody consumes wait there, in order."""
        run(self, self.broker.publish("t.outbound", b"1"))
        run(self, self.broker.publish("t.outbound", b"2"))
        self.assertEqual(self.broker.drain("t.outbound"), [b"1", b"2"])
        self.assertEqual(self.broker.drain("t.outbound"), [])

    def test_get_waits_for_a_message(self) -> None:
        """get() waits until something is published."""
        d = ensureDeferred(self.broker.get("q"))
        self.assertNoResult(d)
        run(self, self.broker.publish("q", b"x"))
        self.assertEqual(self.successResultOf(d), (b"x", {}))

    def test_prefetch_limits_unsettled_deliveries(self) -> None:
        """A consumer holds at most prefetch_count unsettled deliveries; acking lets the next in."""
        got: list[MemoryDelivery] = []
        run(self, self.broker.consume("q", got.append))
        for i in range(5):
            run(self, self.broker.publish("q", b"%d" % i))
        self.assertEqual([d.body for d in got], [b"0", b"1"])
        run(self, got[0].ack())
        self.assertEqual([d.body for d in got], [b"0", b"1", b"2"])

    def test_reject_dead_letters(self) -> None:
        """reject() without requeue moves the message to <queue>.dead."""
        got: list[MemoryDelivery] = []
        run(self, self.broker.consume("q", got.append))
        run(self, self.broker.publish("q", b"bad"))
        run(self, got[0].reject())
        self.assertEqual(self.broker.drain("q.dead"), [b"bad"])

    def test_reject_requeue_redelivers(self) -> None:
        """reject(requeue=True) hands the message out again, marked redelivered."""
        got: list[MemoryDelivery] = []
        run(self, self.broker.consume("q", got.append))
        run(self, self.broker.publish("q", b"m"))
        run(self, got[0].reject(requeue=True))
        self.assertEqual(len(got), 2)
        self.assertTrue(got[1].redelivered)
        self.assertFalse(got[0].redelivered)

    def test_settle_twice_is_an_error(self) -> None:
        """A delivery can be settled only once."""
        got: list[MemoryDelivery] = []
        run(self, self.broker.consume("q", got.append))
        run(self, self.broker.publish("q", b"m"))
        run(self, got[0].ack())
        self.failureResultOf(ensureDeferred(got[0].ack()), BrokerError)

    def test_handler_publishing_does_not_recurse(self) -> None:
        """A handler that publishes to its own queue is served by a flat loop, not recursion."""
        seen: list[bytes] = []

        async def relay(delivery: MemoryDelivery) -> None:
            seen.append(delivery.body)
            await delivery.ack()
            n = int(delivery.body)
            if n < 3000:
                await self.broker.publish("q", b"%d" % (n + 1))

        run(self, self.broker.consume("q", relay))
        run(self, self.broker.publish("q", b"0"))
        self.assertEqual(len(seen), 3001)

    def test_async_handler_holds_delivery_until_settled(self) -> None:
        """An async handler that has not acked yet keeps its slot taken."""
        gates: list[Deferred[None]] = []

        async def slow(delivery: MemoryDelivery) -> None:
            gate: Deferred[None] = Deferred()
            gates.append(gate)
            await gate
            await delivery.ack()

        run(self, self.broker.consume("q", slow))
        for i in range(3):
            run(self, self.broker.publish("q", b"%d" % i))
        self.assertEqual(len(gates), 2)
        gates[0].callback(None)
        self.assertEqual(len(gates), 3)

    def test_cancel_stops_deliveries(self) -> None:
        """After cancel() a consumer gets nothing new; messages wait on the queue."""
        got: list[MemoryDelivery] = []
        consumer = run(self, self.broker.consume("q", got.append))
        run(self, consumer.cancel())  # type: ignore[attr-defined]
        run(self, self.broker.publish("q", b"m"))
        self.assertEqual(got, [])
        self.assertEqual(self.broker.drain("q"), [b"m"])

    def test_body_must_be_bytes(self) -> None:
        """Publishing text instead of bytes is a TypeError."""
        self.failureResultOf(ensureDeferred(self.broker.publish("q", "text")), TypeError)  # type: ignore[arg-type]
