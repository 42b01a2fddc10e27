"""An in-memory broker with the AMQP broker's interface, for the embedded mode and fast tests.

Queues are created on first use, like the durable queues the AMQP broker
declares. Consumers get deliveries immediately, up to ``prefetch_count``
unsettled at a time each; a message published to a queue nobody consumes
waits there (read it with :meth:`MemoryBroker.get` or :meth:`MemoryBroker.drain`).
Rejected deliveries go back to their queue or to ``<queue>.dead``.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from ..aio import call_deferred
from . import BrokerError, Handler, Received, dead_letter_queue

log = logging.getLogger("vxsandbox.broker.memory")


@dataclass
class _Message:
    body: bytes
    redelivered: bool = False


@dataclass
class MemoryDelivery:
    """A delivery from a :class:`MemoryBroker` queue."""

    body: bytes
    routing_key: str
    redelivered: bool
    consumer: MemoryConsumer
    settled: bool = field(default=False, repr=False)

    def _settle(self) -> None:
        if self.settled:
            raise BrokerError(f"delivery from {self.routing_key!r} was already acked or rejected")
        self.settled = True
        self.consumer.unacked -= 1

    async def ack(self) -> None:
        self._settle()
        self.consumer.broker._pump()

    async def reject(self, requeue: bool = False) -> None:
        self._settle()
        broker = self.consumer.broker
        if requeue:
            broker._queue(self.routing_key).appendleft(_Message(self.body, redelivered=True))
        else:
            broker._queue(dead_letter_queue(self.routing_key)).append(_Message(self.body))
            broker._notify(dead_letter_queue(self.routing_key))
        broker._pump()


@dataclass
class MemoryConsumer:
    """A consumer of one :class:`MemoryBroker` queue."""

    broker: MemoryBroker
    routing_key: str
    handler: Handler
    unacked: int = 0
    active: bool = True

    async def cancel(self) -> None:
        self.active = False
        if self in self.broker.consumers:
            self.broker.consumers.remove(self)


class MemoryBroker:
    """Queues in a dict, satisfying :class:`~vxsandbox_core.brokers.Broker` like the AMQP broker.

    :param prefetch_count: unsettled deliveries each consumer may hold.
    """

    def __init__(self, prefetch_count: int = 20) -> None:
        if prefetch_count < 1:
            raise ValueError("prefetch_count must be at least 1")
        self.prefetch_count = prefetch_count
        self.queues: dict[str, deque[_Message]] = {}
        self.consumers: list[MemoryConsumer] = []
        self.connected = False
        self._waiters: dict[str, list[Deferred[None]]] = {}
        self._pumping = False
        self._next = 0

    def _queue(self, routing_key: str) -> deque[_Message]:
        return self.queues.setdefault(routing_key, deque())

    async def connect(self) -> None:
        self.connected = True

    async def close(self) -> None:
        for consumer in list(self.consumers):
            await consumer.cancel()
        self.connected = False

    async def publish(self, routing_key: str, body: bytes) -> None:
        if not isinstance(body, bytes):
            raise TypeError(f"body must be bytes, got {type(body).__name__}")
        self._queue(routing_key).append(_Message(body))
        self._notify(routing_key)
        self._pump()

    async def consume(self, routing_key: str, handler: Handler) -> MemoryConsumer:
        consumer = MemoryConsumer(self, routing_key, handler)
        self.consumers.append(consumer)
        self._pump()
        return consumer

    # --- reading queues directly (tests, the embedded mode) ------------------------

    def drain(self, routing_key: str) -> list[bytes]:
        """Remove and return every message waiting on a queue."""
        queue = self._queue(routing_key)
        bodies = [m.body for m in queue]
        queue.clear()
        return bodies

    async def get(self, routing_key: str) -> Received:
        """Remove and return the next message of a queue, waiting for one if it is empty (no headers)."""
        queue = self._queue(routing_key)
        while not queue:
            d: Deferred[None] = Deferred()
            self._waiters.setdefault(routing_key, []).append(d)
            await d
        return Received(queue.popleft().body, {})

    def _notify(self, routing_key: str) -> None:
        for d in self._waiters.pop(routing_key, []):
            d.callback(None)

    def _pump(self) -> None:
        # A handler may publish from inside its call; the outer loop picks that up, so the
        # stack stays flat however long a chain of publishes gets.
        if self._pumping:
            return
        self._pumping = True
        try:
            progress = True
            while progress:
                progress = False
                for consumer in list(self.consumers):
                    queue = self.queues.get(consumer.routing_key)
                    if consumer.active and queue and consumer.unacked < self.prefetch_count:
                        message = queue.popleft()
                        consumer.unacked += 1
                        self._deliver(consumer, MemoryDelivery(message.body, consumer.routing_key,
                                                               message.redelivered, consumer))
                        progress = True
        finally:
            self._pumping = False

    def _deliver(self, consumer: MemoryConsumer, delivery: MemoryDelivery) -> None:
        d = call_deferred(consumer.handler, delivery)
        d.addErrback(lambda f: log.error("consumer of %s failed: %s", consumer.routing_key,
                                         f.getTraceback()))

    def stats(self) -> dict[str, Any]:
        """Queue lengths and unsettled deliveries, for diagnostics."""
        return {"queues": {k: len(v) for k, v in self.queues.items()},
                "unacked": {c.routing_key: c.unacked for c in self.consumers}}
