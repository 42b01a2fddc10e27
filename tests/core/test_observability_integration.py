"""/health against a real RabbitMQ: it follows the broker connection down and up again."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.portforward import ProxyServer
from twisted.trial.unittest import TestCase

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.observability import start_observability
from vxsandbox_core.testing import hooks_with, python_child, python_worker_config
from vxsandbox_core.worker import Sandbox

pytestmark = pytest.mark.rabbitmq


class _TrackedProxyServer(ProxyServer):
    def connectionMade(self) -> None:
        self.factory.open.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.open.discard(self)
        super().connectionLost(reason)


class Switch(Factory):
    """A TCP proxy to RabbitMQ that the test can cut (dropping every connection) and restore."""

    protocol = _TrackedProxyServer

    def __init__(self) -> None:
        self.host, self.port = "127.0.0.1", 5672
        self.open: set[ProxyServer] = set()
        self.listening: Any = None
        self.bound = 0

    def start(self) -> None:
        self.listening = reactor.listenTCP(self.bound, self, interface="127.0.0.1")
        self.bound = self.listening.getHost().port

    async def cut(self) -> None:
        listening, self.listening = self.listening, None
        await listening.stopListening()
        for server in list(self.open):
            server.transport.abortConnection()


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class HealthIntegrationTests(TestCase):
    """A worker on RabbitMQ (through a proxy the test controls) reports its broker on /health."""

    async def health(self, port: int) -> tuple[int, Any]:
        return await deferToThread(_get, f"http://127.0.0.1:{port}/health")

    async def wait_for(self, port: int, code: int, seconds: float = 15.0) -> list[tuple[int, Any]]:
        """Poll /health until it answers ``code``; returns every answer seen."""
        seen = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen.append(await self.health(port))
            if seen[-1][0] == code:
                return seen
            await deferLater(reactor, 0.1, lambda: None)
        raise AssertionError(f"/health never answered {code}; saw {seen[-3:]}")

    async def test_health_goes_down_with_the_connection_and_comes_back(self) -> None:
        """Cutting the connection makes /health 503; restoring it makes it 200 again after a reconnect."""
        switch = Switch()
        switch.start()
        broker = AmqpBroker(f"amqp://guest:guest@127.0.0.1:{switch.bound}/%2F",
                            connection_name="vxsandbox test_observability_integration", min_backoff=0.1,
                            max_backoff=0.5)
        worker = Sandbox(python_worker_config(python_child([]), metrics_port=0), broker=broker,
                         hooks=hooks_with())
        server = start_observability(worker)
        assert server is not None

        async def clean_up() -> None:
            await server.stop()
            await broker.close()
            if switch.listening is not None:
                await switch.cut()
        self.addCleanup(clean_up)
        assert (await self.health(server.port))[0] == 503
        await broker.connect()
        assert await self.health(server.port) == (200, {"status": "ok", "broker": "connected"})

        await switch.cut()
        await self.wait_for(server.port, 503)
        # Still down while the broker keeps failing to reconnect through the cut proxy.
        await deferLater(reactor, 0.6, lambda: None)
        assert await self.health(server.port) == (503, {"status": "unhealthy", "broker": "disconnected"})

        switch.start()
        await self.wait_for(server.port, 200)
        assert broker.connections_made == 2
        scraped = await deferToThread(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/metrics", timeout=5).read())
        assert b"vxsandbox_broker_connected 1.0" in scraped
