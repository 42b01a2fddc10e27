"""`vxsandbox run` with `metrics_port` on the real RabbitMQ: counters move as messages are handled."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.testing import make_user_message

from .conftest import ROOT

pytestmark = pytest.mark.rabbitmq

ECHO = ROOT / "docs" / "src" / "examples" / "echo_sandbox.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a Prometheus exposition."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


class RunServesMetricsTests(TestCase):
    """A worker process started with `vxsandbox run` serves /metrics and /health."""

    timeout = 90

    async def test_counters_move_after_messages(self) -> None:
        """Three messages through RabbitMQ show as processed, spawned and answered in the scraped metrics."""
        transport = f"metrics_it_{uuid.uuid4().hex[:8]}"
        port = free_port()
        config = Path(self.mktemp())
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({
            "worker": "sandbox", "transport_name": transport, "sandbox_id": "echo", "metrics_port": port,
            "executable": sys.executable, "args": [str(ECHO)], "rlimits": {"RLIMIT_AS": 512 * 1024 * 1024},
            "sandbox": {"log": {"cls": "log"}, "outbound": {"cls": "outbound"}},
        }))
        proc = subprocess.Popen([sys.executable, "-c", "from vxsandbox_core.cli import main; raise SystemExit(main())",
                                 "run", "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(self.stop, proc, transport)
        broker = AmqpBroker(connection_name=f"vxsandbox test {transport}")
        await broker.connect()
        self.addCleanup(broker.close)
        replies: list[dict[str, Any]] = []

        async def got(delivery: Any) -> None:
            replies.append(json.loads(delivery.body))
            await delivery.ack()
        await broker.consume(f"{transport}.outbound", got)

        status = await self.poll(port, "/health", lambda code, _: code == 200)
        assert json.loads(status) == {"status": "ok", "broker": "connected"}
        before = (await deferToThread(scrape, port, "/metrics"))[1]
        assert value(before, "vxsandbox_sandbox_spawns_total") == 0
        for i in range(3):
            msg = make_user_message(transport_name=transport, content=f"m{i}")
            await broker.publish(f"{transport}.inbound", msg.to_json().encode())
        text = await self.poll(port, "/metrics", lambda _, t: value(
            t, "vxsandbox_messages_processed_total", message_type="user_message", outcome="ok") == 3)
        assert value(text, "vxsandbox_sandbox_spawns_total") == 3
        assert value(text, "vxsandbox_sandbox_runs_total", result="ok") == 3
        assert value(text, "vxsandbox_resource_commands_total", resource="outbound", command="reply_to",
                     outcome="ok") == 3
        assert value(text, "vxsandbox_resource_commands_total", resource="log", command="info", outcome="ok") == 3
        assert value(text, "vxsandbox_sandbox_run_duration_seconds_count") == 3
        assert value(text, "vxsandbox_broker_connected") == 1
        deadline = time.monotonic() + 10
        while len(replies) < 3 and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        assert sorted(r["content"] for r in replies) == ["echo: m0", "echo: m1", "echo: m2"]

    async def poll(self, port: int, path: str, done: Any, seconds: float = 30.0) -> str:
        """Fetch ``path`` until ``done(code, text)``; returns the text."""
        deadline = time.monotonic() + seconds
        code, text = 0, ""
        while time.monotonic() < deadline:
            code, text = await deferToThread(scrape, port, path)
            if done(code, text):
                return text
            await deferLater(reactor, 0.1, lambda: None)
        raise AssertionError(f"{path} never got there: {code} {text[-500:]}")

    async def stop(self, proc: subprocess.Popen[bytes], transport: str) -> None:
        """SIGTERM the worker (it must exit 0) and delete the test's queues."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = await deferToThread(proc.wait, 30)
        err = proc.stderr.read().decode() if proc.stderr else ""
        for suffix in ("inbound", "event", "outbound", "inbound.dead", "event.dead", "outbound.dead"):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", f"{transport}.{suffix}"], capture_output=True)
        assert code == 0, err[-2000:]
