"""Unit tests for the AMQP connection's failure paths that need no RabbitMQ."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import TestCase
from txamqp.client import ConnectionClosed

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.brokers.amqp.connection import Connection as _Connection
from vxsandbox_core.brokers.amqp.connection import ConnectionLostError as _ConnectionLostError


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
