"""One AMQP connection to RabbitMQ: a consuming channel, a confirmed publishing channel, declarations.

:class:`Connection` is what :class:`~vxsandbox_core.brokers.amqp.broker.AmqpBroker`
makes anew after every reconnection; it never reconnects itself.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from txamqp.client import ChannelClosed, TwistedDelegate
from txamqp.content import Content
from txamqp.protocol import AMQClient

from ...aio import call_deferred
from .. import BrokerError, dead_letter_queue
from .spec import Client, frames, load_spec
from .url import AmqpUrl

if TYPE_CHECKING:
    from .broker import AmqpBroker, AmqpConsumer

log = logging.getLogger("vxsandbox.broker.amqp")

#: the exchange Vumi transports and workers publish to
EXCHANGE = "vumi"
#: where rejected deliveries go, routed by their original routing key
DEAD_LETTER_EXCHANGE = "vumi.dead"
_PRECONDITION_FAILED = 406
#: the properties of every message published
PUBLISH_PROPERTIES = {"delivery-mode": 2, "content-type": "application/json", "content-encoding": "utf-8"}


class ConnectionLostError(BrokerError):
    """The connection went away before the broker confirmed an operation."""


class _Delegate(TwistedDelegate):  # type: ignore[misc]
    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self.connection = connection

    def connection_start(self, ch: Any, msg: Any) -> None:
        ch.connection_start_ok(client_properties=self.connection.client_properties,
                               mechanism=self.client.mechanism, response=self.client.response,
                               locale=self.client.locale)

    def basic_deliver(self, ch: Any, msg: Any) -> None:
        try:
            self.connection.delivered(msg)
        except Exception:
            log.exception("delivery could not be handed to its consumer")

    def basic_ack(self, ch: Any, msg: Any) -> None:
        self.connection.confirmed(msg.delivery_tag, msg.multiple, True)

    def basic_nack(self, ch: Any, msg: Any) -> None:
        self.connection.confirmed(msg.delivery_tag, msg.multiple, False)

    def basic_cancel(self, ch: Any, msg: Any) -> None:
        # The broker cancels a consumer whose queue was deleted; reconnecting declares it again.
        log.warning("broker cancelled consumer %s; reconnecting to declare its queue again", msg.consumer_tag)
        self.client.transport.loseConnection()


class _Factory(Factory):
    noisy = False

    def __init__(self, connection: Connection, url: AmqpUrl, reactor: Any) -> None:
        self.connection = connection
        self.url = url
        self.reactor = reactor

    def buildProtocol(self, addr: Any) -> AMQClient:
        return Client(_Delegate(self.connection), self.url.vhost, load_spec(),
                      heartbeat=self.url.heartbeat, clock=self.reactor)


class Connection:
    """One AMQP connection: a channel for consuming, one for confirmed publishing, short-lived ones for declaring."""

    def __init__(self, broker: AmqpBroker, number: int) -> None:
        self.broker = broker
        self.number = number
        self.client: AMQClient | None = None
        self.client_properties = {
            "product": "vxsandbox",
            "connection_name": broker.connection_name,
            "information": "https://pypi.org/project/vxsandbox-core/",
        }
        self.open = False
        self.lost: Deferred[None] = Deferred()
        self._channel_ids = itertools.count(1)
        self.consume_channel: Any = None
        self.publish_channel: Any = None
        self._publish_seq = 0
        self._confirms: dict[int, Deferred[None]] = {}
        self._declared: dict[str, _Shared] = {}
        self._tags: dict[str, AmqpConsumer] = {}

    async def start(self) -> None:
        broker = self.broker
        url = broker.url
        endpoint = HostnameEndpoint(broker.reactor, url.host, url.port, timeout=10)
        client: AMQClient = await endpoint.connect(_Factory(self, url, broker.reactor))
        self.client = client
        # Small frames (acks, short replies) must not wait for Nagle's delayed ACK.
        client.transport.setTcpNoDelay(True)
        client.disconnected.wait().addBoth(self._disconnected)
        auth = client.authenticate(url.username, url.password)
        auth.addTimeout(15, broker.reactor)
        await auth
        self.consume_channel = await self._channel()
        await self.consume_channel.basic_qos(prefetch_count=broker.prefetch_count)
        self.publish_channel = await self._channel()
        await self.publish_channel.confirm_select()
        await self.publish_channel.exchange_declare(exchange=EXCHANGE, type="direct", durable=True)
        await self.publish_channel.exchange_declare(exchange=DEAD_LETTER_EXCHANGE, type="direct", durable=True)
        self.open = True

    async def _channel(self) -> Any:
        assert self.client is not None
        channel = await self.client.channel(next(self._channel_ids))
        await channel.channel_open()
        return channel

    def _disconnected(self, result: Any) -> None:
        self.open = False
        lost = ConnectionLostError("connection to the broker lost")
        confirms, self._confirms = self._confirms, {}
        for d in confirms.values():
            d.errback(lost)
        if not self.lost.called:
            self.lost.callback(None)

    def close(self) -> Deferred[None]:
        """Close cleanly (waiting a moment for the broker's close-ok); fires when the socket is gone."""
        if self.client is not None and self.open:
            self.open = False
            self.client.close(within=2)
        elif self.client is not None and self.client.transport is not None:
            self.client.transport.loseConnection()
        return self.lost

    # --- declaring ------------------------------------------------------------------

    async def declare(self, routing_key: str, consumed: bool) -> None:
        """Declare the durable queue ``routing_key`` bound to ``vumi`` (once per connection)."""
        shared = self._declared.get(routing_key)
        if shared is None or (shared.done and isinstance(shared.result, Failure)):
            shared = self._declared[routing_key] = _Shared(call_deferred(self._declare, routing_key, consumed))
        await shared.wait()

    @asynccontextmanager
    async def temporary_channel(self) -> AsyncIterator[Any]:
        """A channel of its own for one operation, closed afterwards."""
        # A refused declaration closes its channel; on a shared channel that would also fail
        # every other declaration in flight, so each one gets a channel of its own.
        channel = await self._channel()
        try:
            yield channel
        finally:
            if self.open:
                try:
                    await channel.channel_close()
                except Exception:
                    log.debug("channel %s was already closed", channel.id)

    def forget(self, routing_key: str) -> None:
        """Declare ``routing_key`` again on next use (it was deleted)."""
        self._declared.pop(routing_key, None)

    async def _declare(self, routing_key: str, consumed: bool) -> None:
        arguments = {}
        async with self.temporary_channel() as channel:
            if consumed:
                dead = dead_letter_queue(routing_key)
                await channel.queue_declare(queue=dead, durable=True)
                await channel.queue_bind(queue=dead, exchange=DEAD_LETTER_EXCHANGE, routing_key=routing_key)
                arguments = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}
            try:
                await channel.queue_declare(queue=routing_key, durable=True, arguments=arguments)
                await channel.queue_bind(queue=routing_key, exchange=EXCHANGE, routing_key=routing_key)
                return
            except ChannelClosed as e:
                if _reply_code(e) != _PRECONDITION_FAILED:
                    raise
        # The queue exists with other arguments (declared by an older Vumi worker, or by a
        # consumer that added a dead-letter exchange); use it as it is rather than refuse.
        if consumed:
            log.warning("queue %s exists without x-dead-letter-exchange; rejected messages are kept "
                        "only if a RabbitMQ policy sets a dead-letter exchange (%s)",
                        routing_key, DEAD_LETTER_EXCHANGE)
        async with self.temporary_channel() as channel:
            await channel.queue_declare(queue=routing_key, durable=True, passive=True)
            await channel.queue_bind(queue=routing_key, exchange=EXCHANGE, routing_key=routing_key)

    # --- publishing -----------------------------------------------------------------

    async def publish(self, routing_key: str, body: bytes) -> None:
        await self.declare(routing_key, consumed=False)
        if not self.open:
            raise ConnectionLostError("connection to the broker lost")
        self._publish_seq += 1
        seq = self._publish_seq
        confirm: Deferred[None] = Deferred()
        self._confirms[seq] = confirm
        channel = self.publish_channel
        client = self.client
        sent: Deferred[None] | None = None
        if isinstance(client, Client) and not channel.closed:
            # Written at once, the frames encoded without txamqp's codec (see .frames), unless txamqp
            # cannot be overtaken or the frames need its encoder.
            data = client.message_frames.publish(channel.id, EXCHANGE, routing_key, body, _publish_properties(),
                                                 client.MAX_LENGTH)
            if data is not None and client.send_now(data):
                sent = succeed(None)
        if sent is None:
            sent = channel.basic_publish(exchange=EXCHANGE, routing_key=routing_key,
                                         content=Content(body, properties=dict(PUBLISH_PROPERTIES)))
        # The broker may have closed the connection before the socket says so: the write then
        # fails at once, and the publish is retried on the next connection like an unconfirmed one.
        sent.addErrback(self._publish_failed, seq)
        await confirm

    def _publish_failed(self, failure: Failure, seq: int) -> None:
        if self.open:
            # The channel or connection is closed on the broker's side: this connection is done
            # for. Drop it so the broker reconnects, rather than retrying on it in a tight loop.
            log.warning("publish failed on connection %d (%s); reconnecting", self.number,
                        failure.getErrorMessage())
            self.open = False
            if self.client is not None and self.client.transport is not None:
                self.client.transport.loseConnection()
        confirm = self._confirms.pop(seq, None)
        if confirm is not None and not confirm.called:
            confirm.errback(ConnectionLostError(f"publish failed: {failure.getErrorMessage()}"))

    def confirmed(self, tag: int, multiple: bool, ok: bool) -> None:
        tags = [t for t in self._confirms if t <= tag] if multiple else [tag]
        for t in tags:
            d = self._confirms.pop(t, None)
            if d is None:
                continue
            if ok:
                d.callback(None)
            else:
                d.errback(BrokerError("the broker refused to take a published message (basic.nack)"))

    # --- consuming ------------------------------------------------------------------

    async def start_consumer(self, consumer: AmqpConsumer) -> None:
        await self.declare(consumer.routing_key, consumed=True)
        tag = f"vxsandbox.{self.number}.{consumer.routing_key}.{next(_consumer_numbers)}"
        self._tags[tag] = consumer
        await self.consume_channel.basic_consume(queue=consumer.routing_key, consumer_tag=tag)
        consumer.tags[self] = tag

    async def cancel_consumer(self, consumer: AmqpConsumer) -> None:
        tag = consumer.tags.pop(self, None)
        if tag is not None and self.open:
            await self.consume_channel.basic_cancel(consumer_tag=tag)

    def delivered(self, msg: Any) -> None:
        consumer = self._tags.get(msg.consumer_tag)
        if consumer is None:
            log.error("delivery for unknown consumer %s; rejecting it back to its queue", msg.consumer_tag)
            d = self.consume_channel.basic_reject(delivery_tag=msg.delivery_tag, requeue=True)
            d.addErrback(lambda f: log.warning("basic_reject failed: %s", f.getErrorMessage()))
            return
        body = msg.content.body
        delivery = AmqpDelivery(body if isinstance(body, bytes) else body.encode("utf-8"),
                                consumer.routing_key, bool(msg.redelivered), msg.delivery_tag, self)
        d = call_deferred(consumer.handler, delivery)
        d.addErrback(lambda f: log.error("consumer of %s failed: %s", consumer.routing_key, f.getTraceback()))

    def settle(self, method: str, **args: Any) -> bool:
        if not self.open or self.broker.connection is not self:
            return False
        channel = self.consume_channel
        client = self.client
        if method == "basic_ack" and isinstance(client, Client) and not channel.closed:
            data = client.message_frames.settle(channel.id, args["delivery_tag"], args["multiple"])
            if client.send_now(data):
                return True
        d = getattr(channel, method)(**args)
        d.addErrback(lambda f: log.warning("%s failed: %s", method, f.getErrorMessage()))
        return True


_consumer_numbers = itertools.count(1)


@lru_cache(maxsize=1)
def _publish_properties() -> bytes:
    """:data:`PUBLISH_PROPERTIES` as a content header carries them."""
    properties = frames().properties(PUBLISH_PROPERTIES)
    assert properties is not None
    return properties


def _reply_code(error: ChannelClosed) -> int | None:
    reason = error.args[0] if error.args else None
    try:
        return int(reason.reply_code)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return None


class _Shared:
    """One operation several callers await; each gets its own Deferred of the one result."""

    def __init__(self, d: Deferred[Any]) -> None:
        self.result: Any = None
        self.done = False
        self._waiters: list[Deferred[Any]] = []
        d.addBoth(self._fire)

    def _fire(self, result: Any) -> None:
        self.done = True
        self.result = result
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            self._pass(w)

    def _pass(self, w: Deferred[Any]) -> None:
        if isinstance(self.result, Failure):
            w.errback(self.result)
        else:
            w.callback(self.result)

    def wait(self) -> Deferred[Any]:
        w: Deferred[Any] = Deferred()
        if self.done:
            self._pass(w)
        else:
            self._waiters.append(w)
        return w


@dataclass(eq=False)
class AmqpDelivery:
    """A delivery from RabbitMQ; acking it after its connection was lost is a no-op (RabbitMQ redelivers)."""

    body: bytes
    routing_key: str
    redelivered: bool
    delivery_tag: int
    connection: Connection = field(repr=False)
    settled: bool = field(default=False, repr=False)

    def _settle(self, method: str, **args: Any) -> None:
        if self.settled:
            raise BrokerError(f"delivery {self.delivery_tag} from {self.routing_key!r} was already settled")
        self.settled = True
        if not self.connection.settle(method, delivery_tag=self.delivery_tag, **args):
            log.info("delivery %d from %s arrived on a connection since lost; not settled "
                     "(RabbitMQ delivers it again)", self.delivery_tag, self.routing_key)

    async def ack(self) -> None:
        self._settle("basic_ack", multiple=False)

    async def reject(self, requeue: bool = False) -> None:
        self._settle("basic_reject", requeue=requeue)
