"""Unit tests for the AMQP connection's failure paths that need no RabbitMQ."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from txamqp.client import ConnectionClosed, TwistedDelegate
from txamqp.connection import Frame, Method

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.brokers.amqp.connection import PUBLISH_PROPERTIES
from vxsandbox_core.brokers.amqp.connection import Connection as _Connection
from vxsandbox_core.brokers.amqp.connection import ConnectionLostError as _ConnectionLostError
from vxsandbox_core.brokers.amqp.frames import Frames
from vxsandbox_core.brokers.amqp.spec import Client as Client_
from vxsandbox_core.brokers.amqp.spec import frames, load_spec


class ClosedChannel:
    """A publish channel whose broker already sent connection.close: every publish fails at once."""

    def basic_publish(self, **kwargs: Any) -> Deferred[None]:
        return fail(ConnectionClosed("CONNECTION_FORCED"))


class Transport:
    def __init__(self) -> None:
        self.lost = False

    def loseConnection(self) -> None:
        self.lost = True


class Client:
    def __init__(self) -> None:
        self.transport = Transport()


class PublishFailureTests(TestCase):
    async def test_publish_on_a_connection_closed_by_the_broker_fails_and_drops_it(self) -> None:
        """A publish refused because the broker closed the connection fails (to be retried), never unhandled."""
        connection = _Connection(AmqpBroker(), 1)
        connection.open = True
        connection.client = Client()  # type: ignore[assignment]
        connection.publish_channel = ClosedChannel()

        def declared(routing_key: str, consumed: bool) -> Deferred[None]:
            return succeed(None)
        connection.declare = declared  # type: ignore[assignment,method-assign]
        with self.assertRaises(_ConnectionLostError):
            await connection.publish("t.outbound", b"{}")
        self.assertFalse(connection.open)
        self.assertTrue(connection.client.transport.lost)  # type: ignore[union-attr]
        self.assertEqual(connection._confirms, {})
        self.assertEqual(self.flushLoggedErrors(), [])


#: the worker's publish properties (persistent JSON in UTF-8) as a content header carries them
PROPERTIES = frames().properties(PUBLISH_PROPERTIES) or b""


class FastPathTests(TestCase):
    """Publishing and settling write their frames at once through the client, or take txamqp's way."""

    def connection(self) -> tuple[_Connection, Any]:
        client = Client_(TwistedDelegate(), "/", load_spec(), clock=Clock())
        transport = StringTransport()
        client.makeConnection(transport)
        connection = _Connection(AmqpBroker(), 1)
        connection.open = True
        connection.client = client
        connection.publish_channel = client.channel(1).result
        connection.consume_channel = client.channel(2).result
        connection.broker.connection = connection

        def declared(routing_key: str, consumed: bool) -> Deferred[None]:
            return succeed(None)
        connection.declare = declared  # type: ignore[assignment,method-assign]
        transport.clear()
        return connection, transport

    def test_publish_writes_its_frames_at_once_and_waits_for_the_confirm(self) -> None:
        connection, transport = self.connection()
        d = ensureDeferred(connection.publish("t.outbound", b'{"a": 1}'))
        expected = frames().publish(1, "vumi", "t.outbound", b'{"a": 1}', PROPERTIES, 4096)
        self.assertEqual(transport.value(), expected)
        self.assertNoResult(d)
        connection.confirmed(1, False, True)
        self.successResultOf(d)

    def test_publish_behind_queued_frames_takes_txamqps_way(self) -> None:
        """Frames txamqp has queued are written first: the publish then goes through its queue, in order."""
        connection, transport = self.connection()
        client = connection.client
        # txamqp's writer is busy (not waiting on its queue) and a frame of its own is queued.
        client.outgoing.waiting.pop(0)
        qos = Frame(1, Method(load_spec().classes.byname["basic"].methods.byname["qos"], 0, 1, False))
        client.outgoing.put(qos)
        ensureDeferred(connection.publish("t.outbound", b"{}"))
        self.assertEqual(transport.value(), b"")
        client.outgoing.get().addCallback(client.writer)
        expected = frames().publish(1, "vumi", "t.outbound", b"{}", PROPERTIES, 4096)
        self.assertEqual(transport.value(), client._pack_frame(qos) + expected)

    async def test_publish_on_a_closed_channel_fails(self) -> None:
        connection, transport = self.connection()
        connection.publish_channel.closed = True
        with self.assertRaises(_ConnectionLostError):
            await connection.publish("t.outbound", b"{}")
        self.assertEqual(transport.value(), b"")
        self.flushLoggedErrors()

    def test_ack_is_written_at_once(self) -> None:
        connection, transport = self.connection()
        self.assertTrue(connection.settle("basic_ack", delivery_tag=7, multiple=False))
        self.assertEqual(transport.value(), Frames.settle(2, 7, False))
