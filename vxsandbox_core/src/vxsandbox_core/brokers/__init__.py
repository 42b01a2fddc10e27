"""Brokers carry Vumi messages between transports and workers: AMQP (RabbitMQ) or in memory.

Both brokers share one small interface, :class:`Broker`:

- ``await broker.connect()`` before anything else;
- ``await broker.publish(routing_key, body)`` sends ``body`` to the queue
  named ``routing_key`` (it returns once the broker holds it);
- ``await broker.consume(routing_key, handler)`` calls ``handler(delivery)``
  for every message on that queue, without waiting for the previous one, up
  to the broker's prefetch count at a time; the handler settles each
  :class:`Delivery` with ``ack()`` or ``reject()``;
- ``await broker.close()``.

A delivery rejected without requeue goes to the dead-letter queue
``<routing_key>.dead``, so a message no worker can read is kept, not lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from ..errors import VxSandboxError

#: suffix of the queue that keeps what was rejected from a queue
DEAD_LETTER_SUFFIX = ".dead"


class BrokerError(VxSandboxError):
    """The broker refused an operation or is not connected."""


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


@runtime_checkable
class Broker(Protocol):
    """What workers and transports need from a broker."""

    async def connect(self) -> None:
        """Connect (and declare what is needed); returns once usable."""

    async def publish(self, routing_key: str, body: bytes) -> None:
        """Publish ``body`` to the durable queue named ``routing_key``; returns once the broker holds it."""

    async def consume(self, routing_key: str, handler: Handler) -> Consumer:
        """Call ``handler`` for each message on the queue named ``routing_key``."""

    async def close(self) -> None:
        """Stop consuming and disconnect."""


def dead_letter_queue(routing_key: str) -> str:
    """The queue that keeps deliveries rejected from ``routing_key``."""
    return routing_key + DEAD_LETTER_SUFFIX


__all__ = ["DEAD_LETTER_SUFFIX", "Broker", "BrokerError", "Consumer", "Delivery", "Handler",
           "dead_letter_queue"]
