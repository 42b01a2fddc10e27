"""Brokers carry Vumi messages between transports and workers: AMQP (RabbitMQ) or in memory.

Both brokers (:class:`~vxsandbox_core.brokers.amqp.AmqpBroker` and
:class:`~vxsandbox_core.brokers.memory.MemoryBroker`) satisfy one interface,
the :class:`Broker` protocol, documented below; workers, the service and
transports use nothing else. A delivery rejected without requeue goes to the
dead-letter queue ``<routing_key>.dead``, so a message no worker can read is
kept, not lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..errors import BrokerError

#: suffix of the queue that keeps what was rejected from a queue
DEAD_LETTER_SUFFIX = ".dead"


class Delivery(Protocol):
    """One message handed to a consumer; settle it exactly once."""

    #: the message body as the publisher sent it
    body: bytes
    #: the queue (and routing key) it came from
    routing_key: str
    #: True when the broker delivered it before and it was never acknowledged
    redelivered: bool

    async def ack(self) -> None:
        """The message is done with: the broker forgets it."""

    async def reject(self, requeue: bool = False) -> None:
        """The message cannot be processed: back to its queue, or (by default) to the dead-letter queue."""


#: what a consumer calls for each delivery; may be ``async``
Handler = Callable[[Delivery], "Awaitable[Any] | Any"]


class Consumer(Protocol):
    """A running consumer of one queue."""

    routing_key: str

    async def cancel(self) -> None:
        """Stop receiving new deliveries (deliveries already handed over still need settling)."""


class Received(NamedTuple):
    """A message taken off a queue with :meth:`Broker.get`."""

    #: the message body as the publisher sent it
    body: bytes
    #: the message's headers (RabbitMQ's ``x-death`` on a dead letter; empty in memory)
    headers: dict[str, Any]


@runtime_checkable
class Broker(Protocol):
    """What workers and transports need from a broker; both brokers provide exactly this.

    ``connect`` first and ``close`` last; between them ``publish`` and
    ``consume`` as often as needed, and ``get`` to read a queue nobody
    consumes (a transport's outbound queue in tests and tools).
    """

    async def connect(self) -> None:
        """Connect (and declare what is needed); returns once usable."""

    async def publish(self, routing_key: str, body: bytes) -> None:
        """Publish ``body`` to the durable queue named ``routing_key``; returns once the broker holds it."""

    async def consume(self, routing_key: str, handler: Handler) -> Consumer:
        """Call ``handler(delivery)`` for each message on the queue ``routing_key``.

        Deliveries are handed over without waiting for the previous one, up to
        the broker's prefetch count unsettled at a time; the handler settles
        each :class:`Delivery` with ``ack()`` or ``reject()``.
        """

    async def get(self, routing_key: str) -> Received:
        """Take the next message off the queue ``routing_key``, waiting until there is one."""

    async def close(self) -> None:
        """Stop consuming and disconnect."""


def dead_letter_queue(routing_key: str) -> str:
    """The queue that keeps deliveries rejected from ``routing_key``."""
    return routing_key + DEAD_LETTER_SUFFIX


__all__ = ["DEAD_LETTER_SUFFIX", "Broker", "BrokerError", "Consumer", "Delivery", "Handler", "Received",
           "dead_letter_queue"]
