"""The AMQP 0-9-1 broker (RabbitMQ) over txamqp, laid out exactly as Vumi lays it out.

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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from txamqp import codec as _txamqp_codec
from txamqp.client import ChannelClosed, Closed, TwistedDelegate
from txamqp.connection import Body, Frame
from txamqp.content import Content
from txamqp.protocol import AMQClient
from txamqp.spec import Spec, load

from ..aio import call_deferred
from ..errors import ConfigError
from . import BrokerError, Handler, dead_letter_queue

log = logging.getLogger("vxsandbox.broker.amqp")

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: the exchange Vumi transports and workers publish to
EXCHANGE = "vumi"
#: where rejected deliveries go, routed by their original routing key
DEAD_LETTER_EXCHANGE = "vumi.dead"
_PRECONDITION_FAILED = 406


@dataclass(frozen=True)
class AmqpUrl:
    """The parts of an ``amqp://user:password@host:port/vhost?heartbeat=N`` URL."""

    host: str
    port: int
    username: str
    password: str
    vhost: str
    heartbeat: int

    @classmethod
    def parse(cls, url: str, key: str = "amqp.url") -> AmqpUrl:
        """Parse a URL; the vhost is percent-decoded (``%2F`` is ``/``, the default).

        :raises ConfigError: not an ``amqp://`` URL.
        """
        if not isinstance(url, str):
            raise ConfigError(key, f"expected an amqp:// URL string, got {url!r}")
        parts = urlsplit(url)
        if parts.scheme != "amqp":
            hint = " (TLS is not supported)" if parts.scheme == "amqps" else ""
            raise ConfigError(key, f"expected an amqp:// URL{hint}, got {url!r}")
        try:
            port = parts.port or 5672
        except ValueError:
            raise ConfigError(key, f"bad port in {url!r}") from None
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        heartbeat = 60
        for item in filter(None, parts.query.split("&")):
            name, _, value = item.partition("=")
            if name != "heartbeat" or not value.isdigit():
                raise ConfigError(key, f"unsupported URL option {item!r} in {url!r} (only heartbeat=SECONDS)")
            heartbeat = int(value)
        return cls(parts.hostname or "127.0.0.1", port, unquote(parts.username or "guest"),
                   unquote(parts.password or "guest"), vhost, heartbeat)

    def safe(self) -> str:
        """The URL without its password, for logs."""
        vhost = "%2F" if self.vhost == "/" else self.vhost
        return f"amqp://{self.username}@{self.host}:{self.port}/{vhost}"


@lru_cache(maxsize=1)
def load_spec() -> Spec:
    """The AMQP 0-9-1 spec (RabbitMQ's extended XML, shipped as package data), parsed once."""
    ref = resources.files("vxsandbox_core") / "data" / "amqp0-9-1.xml"
    with resources.as_file(ref) as path:
        return load(str(path))


# --- field tables --------------------------------------------------------------------

def _decode_field(c: Any) -> Any:
    kind = c.read(1)
    simple = {b"b": "!b", b"B": "!B", b"s": "!h", b"u": "!H", b"I": "!i", b"i": "!I",
              b"l": "!q", b"L": "!Q", b"f": "!f", b"d": "!d", b"T": "!Q"}
    if kind in simple:
        return c.unpack(simple[kind])
    if kind == b"t":
        return c.unpack("!B") != 0
    if kind == b"S":
        data = c.dec_bytes("!L")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data
    if kind == b"x":
        return c.dec_bytes("!L")
    if kind == b"F":
        return _decode_table(c)
    if kind == b"A":
        size = c.unpack("!L")
        end = c.nread + size
        items = []
        while c.nread < end:
            items.append(_decode_field(c))
        return items
    if kind == b"D":
        scale = c.unpack("!B")
        return Decimal(c.unpack("!i")).scaleb(-scale)
    if kind == b"V":
        return None
    raise ValueError(f"unknown AMQP field type {kind!r}")


def _decode_table(c: Any) -> dict[str, Any]:
    size = c.unpack("!L")
    end = c.nread + size
    table: dict[str, Any] = {}
    while c.nread < end:
        name = c.decode_shortstr()
        table[name] = _decode_field(c)
    return table


# txamqp 0.8 reads only four of the field types (S, I, F, t); RabbitMQ's own x-death header
# (arrays, timestamps) or a publisher's headers would otherwise make it drop the connection.
_txamqp_codec.Codec.decode_table = _decode_table  # type: ignore[method-assign]


def _decode_body(spec: Any, dec: Any) -> Body:
    return Body(dec.decode_longbytes())


# txamqp 0.8 turns each body frame into text when it happens to be valid UTF-8, then counts
# characters against the byte size in the header: a non-ASCII body never completes and
# stalls every channel of the connection. Body frames are bytes.
Body.decode = staticmethod(_decode_body)  # type: ignore[method-assign]


# --- one connection -------------------------------------------------------------------

class _ConnectionLostError(BrokerError):
    """The connection went away before the broker confirmed an operation."""


class _Delegate(TwistedDelegate):  # type: ignore[misc]
    def __init__(self, connection: _Connection) -> None:
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


class _Client(AMQClient):  # type: ignore[misc]
    """txamqp's client without three costs it pays on every frame (each about as dear as the frame).

    It looks the frame's channel up under a lock in two generator coroutines,
    cancels and schedules a timer for each frame received, and stops and
    starts a looping call for each frame sent. Behaviour is unchanged: an
    existing channel is used directly only when the lock is free (so frames
    keep their order), the receive deadline is pushed back with
    ``DelayedCall.reset`` (free when it moves later), and the heartbeat is
    sent every interval whatever else was sent, which RabbitMQ accepts.
    """

    def process_frame(self, frame: Any) -> Deferred[None]:
        channel = self.channels.get(frame.channel)
        if channel is None or self.channelLock.locked:
            return super().process_frame(frame)  # type: ignore[no-any-return]
        try:
            if frame.payload.type == Frame.HEARTBEAT:
                self.last_heartbeat_received = time.time()
            else:
                channel.dispatch(frame, self.work)
            if self.heartbeatInterval > 0 and not self.closed:
                self.reschedule_check_heartbeat()
        except Exception:
            return fail()
        return succeed(None)

    def reschedule_check_heartbeat(self) -> None:
        if self.checkHB.active():
            self.checkHB.reset(self.heartbeatInterval * self.MAX_UNSEEN_HEARTBEAT)
        else:
            super().reschedule_check_heartbeat()

    def reschedule_send_heartbeat(self) -> None:
        if self.heartbeatInterval > 0 and not self.sendHB.running:
            self.sendHB.start(self.heartbeatInterval, now=False)


class _Factory(Factory):
    noisy = False

    def __init__(self, connection: _Connection, url: AmqpUrl, reactor: Any) -> None:
        self.connection = connection
        self.url = url
        self.reactor = reactor

    def buildProtocol(self, addr: Any) -> AMQClient:
        return _Client(_Delegate(self.connection), self.url.vhost, load_spec(),
                         heartbeat=self.url.heartbeat, clock=self.reactor)


class _Connection:
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
        client = await endpoint.connect(_Factory(self, url, broker.reactor))  # type: ignore[arg-type]
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
        lost = _ConnectionLostError("connection to the broker lost")
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
    async def _temporary_channel(self) -> AsyncIterator[Any]:
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

    async def _declare(self, routing_key: str, consumed: bool) -> None:
        arguments = {}
        async with self._temporary_channel() as channel:
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
        async with self._temporary_channel() as channel:
            await channel.queue_declare(queue=routing_key, durable=True, passive=True)
            await channel.queue_bind(queue=routing_key, exchange=EXCHANGE, routing_key=routing_key)

    # --- publishing -----------------------------------------------------------------

    async def publish(self, routing_key: str, body: bytes) -> None:
        await self.declare(routing_key, consumed=False)
        if not self.open:
            raise _ConnectionLostError("connection to the broker lost")
        self._publish_seq += 1
        seq = self._publish_seq
        confirm: Deferred[None] = Deferred()
        self._confirms[seq] = confirm
        content = Content(body, properties={"delivery-mode": 2, "content-type": "application/json",
                                            "content-encoding": "utf-8"})
        sent = self.publish_channel.basic_publish(exchange=EXCHANGE, routing_key=routing_key, content=content)
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
            confirm.errback(_ConnectionLostError(f"publish failed: {failure.getErrorMessage()}"))

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
        d = getattr(self.consume_channel, method)(**args)
        d.addErrback(lambda f: log.warning("%s failed: %s", method, f.getErrorMessage()))
        return True


_consumer_numbers = itertools.count(1)


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
    connection: _Connection = field(repr=False)
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


@dataclass(eq=False)
class AmqpConsumer:
    """A consumer that survives reconnections."""

    broker: AmqpBroker
    routing_key: str
    handler: Handler
    active: bool = True
    tags: dict[_Connection, str] = field(default_factory=dict, repr=False)

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
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.url = AmqpUrl.parse(url)
        self.prefetch_count = prefetch_count
        self.connection_name = connection_name or f"vxsandbox pid {os.getpid()}"
        self.reactor = reactor
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connection: _Connection | None = None
        self.consumers: list[AmqpConsumer] = []
        #: how many connections were made (1 + reconnections)
        self.connections_made = 0
        self._numbers = itertools.count(1)
        self._closing = False
        self._loop: Deferred[None] | None = None
        self._sleep: Deferred[Any] | None = None
        self._waiting: list[Deferred[_Connection]] = []

    # --- connection management ---------------------------------------------------------

    async def connect(self) -> None:
        """Connect, retrying with backoff until RabbitMQ answers; keeps reconnecting afterwards."""
        if self._closing:
            raise BrokerError("broker is closed")
        if self._loop is None:
            self._loop = call_deferred(self._run)
            self._loop.addErrback(lambda f: log.error("broker connection loop failed: %s", f.getTraceback()))
        await self._connected()

    def _connected(self) -> Deferred[_Connection]:
        d: Deferred[_Connection] = Deferred()
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
            connection = _Connection(self, next(self._numbers))
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
            connection = await self._connected()
            try:
                await connection.publish(routing_key, body)
                return
            except (_ConnectionLostError, Closed):
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
        connection = await self._connected()
        await connection.declare(routing_key, consumed)

    async def delete_queues(self, *routing_keys: str) -> None:
        """Delete queues (and their dead-letter queues), e.g. after a test; missing ones are skipped."""
        connection = await self._connected()
        for name in routing_keys:
            for queue in (name, dead_letter_queue(name)):
                channel = await connection._channel()
                try:
                    await channel.queue_delete(queue=queue)
                    await channel.channel_close()
                except ChannelClosed:
                    pass
                connection._declared.pop(queue, None)

    async def queue_length(self, routing_key: str) -> int:
        """Messages ready on a queue (not counting deliveries not yet acknowledged)."""
        connection = await self._connected()
        channel = await connection._channel()
        try:
            reply = await channel.queue_declare(queue=routing_key, passive=True)
            await channel.channel_close()
            return int(reply.message_count)
        except ChannelClosed:
            return 0

    async def get(self, routing_key: str) -> tuple[bytes, dict[str, Any]] | None:
        """Take one message off a queue without a consumer (``basic.get``): its body and headers, or None."""
        connection = await self._connected()
        channel = await connection._channel()
        try:
            reply = await channel.basic_get(queue=routing_key, no_ack=True)
        finally:
            await channel.channel_close()
        if reply.method.name != "get-ok":
            return None
        headers = reply.content.properties.get("headers") or {}
        return reply.content.body, dict(headers)
