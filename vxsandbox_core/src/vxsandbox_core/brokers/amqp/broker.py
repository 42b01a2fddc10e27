"""The reconnecting RabbitMQ broker, laid out exactly as Vumi lays it out.

Exchange ``vumi`` (direct, durable); one durable queue per routing key, bound
with that key; messages published with delivery mode 2 and confirmed by the
broker (publisher confirms) before :meth:`AmqpBroker.publish` returns.
Consumed queues carry ``x-dead-letter-exchange: vumi.dead``, so a delivery
rejected without requeue moves to ``<queue>.dead`` instead of vanishing.

The connection is kept up: when RabbitMQ goes away the broker reconnects with
exponential backoff, declares everything again and resumes every consumer.
Publishes made meanwhile wait for the new connection; a publish whose
confirm was lost with the old connection is sent again (a duplicate is
possible, a loss is not). Deliveries of the old connection can no longer be
acknowledged; RabbitMQ hands them out again.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from txamqp.client import Closed

from ...aio import call_deferred, default_reactor
from .. import BrokerError, Handler, Received
from .connection import Connection, ConnectionLostError
from .url import DEFAULT_URL, AmqpUrl

log = logging.getLogger("vxsandbox.broker.amqp")

#: seconds between ``basic.get`` polls while :meth:`AmqpBroker.get` waits for a message
GET_POLL_INTERVAL = 0.05


@dataclass(eq=False)
class AmqpConsumer:
    """A consumer that survives reconnections."""

    broker: AmqpBroker
    routing_key: str
    handler: Handler
    active: bool = True
    tags: dict[Connection, str] = field(default_factory=dict, repr=False)

    async def cancel(self) -> None:
        self.active = False
        if self in self.broker.consumers:
            self.broker.consumers.remove(self)
        connection = self.broker.connection
        if connection is not None:
            await connection.cancel_consumer(self)


class AmqpBroker:
    """A reconnecting RabbitMQ broker.

    :param url: ``amqp://user:password@host:port/vhost`` (``?heartbeat=SECONDS``, default 60).
    :param prefetch_count: unacknowledged deliveries RabbitMQ may hand each consumer (``basic.qos``).
    :param connection_name: shown by ``rabbitmqctl list_connections client_properties`` and the
        management UI.
    :param min_backoff: first delay before reconnecting, in seconds (doubles up to ``max_backoff``).
    """

    def __init__(self, url: str = DEFAULT_URL, prefetch_count: int = 20, connection_name: str | None = None,
                 reactor: Any = None, min_backoff: float = 0.2, max_backoff: float = 15.0) -> None:
        reactor = default_reactor(reactor)
        self.url = AmqpUrl.parse(url)
        self.prefetch_count = prefetch_count
        self.connection_name = connection_name or f"vxsandbox pid {os.getpid()}"
        self.reactor = reactor
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connection: Connection | None = None
        self.consumers: list[AmqpConsumer] = []
        #: how many connections were made (1 + reconnections)
        self.connections_made = 0
        self._numbers = itertools.count(1)
        self._closing = False
        self._loop: Deferred[None] | None = None
        self._sleep: Deferred[Any] | None = None
        self._waiting: list[Deferred[Connection]] = []

    # --- connection management ---------------------------------------------------------

    async def connect(self) -> None:
        """Connect, retrying with backoff until RabbitMQ answers; keeps reconnecting afterwards."""
        if self._closing:
            raise BrokerError("broker is closed")
        if self._loop is None:
            self._loop = call_deferred(self._run)
            self._loop.addErrback(lambda f: log.error("broker connection loop failed: %s", f.getTraceback()))
        await self.connected()

    def connected(self) -> Deferred[Connection]:
        """The open connection, once there is one (fails once the broker is closed)."""
        d: Deferred[Connection] = Deferred()
        if self.connection is not None and self.connection.open:
            d.callback(self.connection)
        elif self._closing:
            d.errback(BrokerError("broker is closed"))
        else:
            self._waiting.append(d)
        return d

    async def _run(self) -> None:
        delay = self.min_backoff
        while not self._closing:
            connection = Connection(self, next(self._numbers))
            try:
                await connection.start()
                # consume() may add a consumer while earlier ones are being started.
                while pending := [c for c in self.consumers if connection not in c.tags]:
                    for consumer in pending:
                        await connection.start_consumer(consumer)
            except Exception as e:
                connection.close()
                if self._closing:
                    break
                reason = e.args[0] if isinstance(e, Closed) and e.args else e
                log.warning("cannot connect to %s (%s: %s); retrying in %.1fs", self.url.safe(),
                            type(e).__name__, reason, delay)
                await self._pause(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = self.min_backoff
            self.connection = connection
            self.connections_made += 1
            log.info("connected to %s (connection %d)", self.url.safe(), self.connections_made)
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(connection)
            await connection.lost
            self.connection = None
            if not self._closing:
                log.warning("connection to %s lost; reconnecting", self.url.safe())
                # Jitter keeps many workers from hammering a restarted broker in step.
                await self._pause(random.uniform(0, self.min_backoff))

    async def _pause(self, seconds: float) -> None:
        self._sleep = deferLater(self.reactor, seconds, lambda: None)
        try:
            await self._sleep
        except CancelledError:
            pass
        finally:
            self._sleep = None

    async def close(self) -> None:
        """Stop consuming and reconnecting; close the connection cleanly."""
        if self._closing:
            return
        self._closing = True
        for consumer in list(self.consumers):
            try:
                await consumer.cancel()
            except Exception as e:
                log.debug("cancelling %s on close: %s", consumer.routing_key, e)
        if self._sleep is not None:
            self._sleep.cancel()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(BrokerError("broker closed"))
        if self.connection is not None:
            await self.connection.close()
        if self._loop is not None:
            await self._loop

    # --- the broker interface ------------------------------------------------------------

    async def publish(self, routing_key: str, body: bytes) -> None:
        """Publish to ``vumi`` with ``routing_key``, delivery mode 2; returns once RabbitMQ confirmed it.

        While disconnected this waits for the next connection.
        """
        if not isinstance(body, bytes):
            raise TypeError(f"body must be bytes, got {type(body).__name__}")
        while True:
            connection = await self.connected()
            try:
                await connection.publish(routing_key, body)
                return
            except (ConnectionLostError, Closed):
                if self._closing:
                    raise BrokerError(f"broker closed before a message to {routing_key} was confirmed") from None
                log.info("publish to %s unconfirmed when the connection was lost; publishing again",
                         routing_key)

    async def consume(self, routing_key: str, handler: Handler) -> AmqpConsumer:
        """Consume the queue ``routing_key`` (declared with a dead-letter exchange), now and after reconnects."""
        consumer = AmqpConsumer(self, routing_key, handler)
        self.consumers.append(consumer)
        if self.connection is not None and self.connection.open:
            await self.connection.start_consumer(consumer)
        return consumer

    async def declare(self, routing_key: str, consumed: bool = False) -> None:
        """Declare a queue bound to ``vumi`` without consuming it (``consumed`` adds the dead-letter setup)."""
        connection = await self.connected()
        await connection.declare(routing_key, consumed)

    async def get(self, routing_key: str) -> Received:
        """Take the next message off a queue without a consumer (``basic.get``), waiting for one."""
        while True:
            connection = await self.connected()
            async with connection.temporary_channel() as channel:
                reply = await channel.basic_get(queue=routing_key, no_ack=True)
            if reply.method.name == "get-ok":
                headers = reply.content.properties.get("headers") or {}
                return Received(reply.content.body, dict(headers))
            await deferLater(self.reactor, GET_POLL_INTERVAL, lambda: None)
