"""Tests for vxsandbox_core.brokers.amqp and the worker service against the real RabbitMQ on 127.0.0.1:5672.

Each test uses its own transport name and deletes its queues, so the tests
can run in parallel and again. Messages are published as a Vumi transport
would: raw JSON on ``<transport>.inbound`` / ``.event``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from io import BytesIO
from typing import Any

import pytest
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txamqp.codec import Codec

from vxsandbox_core.brokers import Delivery
from vxsandbox_core.brokers.amqp import AmqpBroker, AmqpUrl
from vxsandbox_core.brokers.amqp.admin import delete_queues, queue_length
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.message import Message
from vxsandbox_core.service import WorkerService
from vxsandbox_core.testing import echo_worker_config, hooks_with
from vxsandbox_core.worker import Sandbox

VUMI_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def vumi_message(transport: str, n: int = 0, **fields: Any) -> dict[str, Any]:
    """A user message as a Vumi transport puts it on the wire."""
    msg: dict[str, Any] = {
        "message_version": "20110921", "message_type": "user_message", "message_id": f"m-{n}-{uuid.uuid4().hex}",
        "to_addr": "*120*8864#", "from_addr": "+27831234567", "in_reply_to": None, "session_event": "resume",
        "content": f"msg {n}", "transport_name": transport, "transport_type": "ussd",
        "transport_metadata": {}, "helper_metadata": {}, "routing_metadata": {}, "group": None,
        "provider": None, "timestamp": "2024-03-01 10:00:00.000000",
    }
    msg.update(fields)
    return msg


class Collector:
    """Consumes a queue, keeping every JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.bodies.append(json.loads(delivery.body))
        await delivery.ack()

    async def wait_for(self, n: int, timeout: float = 30, key: str | None = None) -> list[dict[str, Any]]:
        """Wait until ``n`` bodies (or ``n`` distinct values of ``key``) arrived."""
        deadline = time.monotonic() + timeout
        while self.count(key) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {self.count(key)} of {n} messages within {timeout}s")
            await sleep(0.05)
        return self.bodies

    def count(self, key: str | None) -> int:
        return len(self.bodies) if key is None else len({b.get(key) for b in self.bodies})


class WorkerProcess(ProcessProtocol):
    """``vxsandbox run`` as a real child process, its stderr kept."""

    def __init__(self) -> None:
        self.stderr = BytesIO()
        self.ended: Deferred[int] = Deferred()

    def errReceived(self, data: bytes) -> None:
        self.stderr.write(data)

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)

    @property
    def log(self) -> str:
        return self.stderr.getvalue().decode("utf-8", "replace")

    async def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if time.monotonic() > deadline or self.ended.called:
                raise AssertionError(f"worker never logged {text!r}:\n{self.log}")
            await sleep(0.05)


@pytest.mark.rabbitmq
class AmqpIntegrationTests(TestCase):
    timeout = 240

    async def setup_transport(self) -> None:
        self.tn = f"vxtest_{uuid.uuid4().hex[:12]}"
        self.transport = AmqpBroker(connection_name=f"vxsandbox-test transport {self.tn}")
        await self.transport.connect()
        self.addCleanup(self.cleanup_transport)
        self.replies = Collector()

    async def listen(self) -> None:
        await self.transport.consume(f"{self.tn}.outbound", self.replies)

    def cleanup_transport(self) -> Deferred[None]:
        async def clean() -> None:
            await delete_queues(self.transport, f"{self.tn}.inbound", f"{self.tn}.event", f"{self.tn}.outbound")
            await self.transport.close()
        return Deferred.fromCoroutine(clean())

    async def start_worker(self, delay: float = 0.0, prefetch: int = 20,
                           messages_per_process: int = 1) -> WorkerService:
        broker = AmqpBroker(prefetch_count=prefetch, connection_name=f"vxsandbox-test worker {self.tn}")
        worker = Sandbox(echo_worker_config(self.tn, delay, amqp_prefetch_count=prefetch,
                                            messages_per_process=messages_per_process),
                         broker=broker, hooks=hooks_with())
        service = WorkerService(worker, broker)
        await service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(service.stop()))
        return service

    def spawn_worker(self, delay: float = 0.0, prefetch: int = 20) -> WorkerProcess:
        path = os.path.join(self.mktemp() + ".yaml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(echo_worker_config(self.tn, delay, amqp_prefetch_count=prefetch), f)
        proc = WorkerProcess()
        env = dict(os.environ)
        env.pop("VXSANDBOX_AMQP_URL", None)
        reactor.spawnProcess(proc, sys.executable, [sys.executable, "-m", "vxsandbox_core.cli", "run", "-c", path],
                             env=env)

        def kill_if_running() -> Deferred[int] | None:
            if proc.ended.called:
                return None
            proc.transport.signalProcess("KILL")
            return proc.ended
        self.addCleanup(kill_if_running)
        return proc

    async def publish_all(self, queue: str, bodies: list[bytes]) -> None:
        for start in range(0, len(bodies), 100):
            await gatherResults([Deferred.fromCoroutine(self.transport.publish(queue, body))
                                 for body in bodies[start:start + 100]])

    # --- the message itself -----------------------------------------------------------

    async def test_message_round_trip_as_vumi_transport(self) -> None:
        """A raw Vumi message reaches the sandbox; its reply is a correct Vumi reply with object metadata."""
        await self.setup_transport()
        await self.start_worker()
        await self.listen()
        inbound = vumi_message(self.tn, content="Sawubona ñ 日本 😀", transport_metadata=None,
                               routing_metadata=None, from_addr_type="msisdn")
        del inbound["helper_metadata"]
        await self.transport.publish(f"{self.tn}.inbound", json.dumps(inbound).encode("utf-8"))
        [reply] = await self.replies.wait_for(1)
        self.assertEqual(reply["in_reply_to"], inbound["message_id"])
        self.assertEqual(reply["content"], "echo: Sawubona ñ 日本 😀")
        self.assertEqual((reply["to_addr"], reply["from_addr"]), ("+27831234567", "*120*8864#"))
        self.assertEqual(reply["to_addr_type"], "msisdn")
        self.assertEqual((reply["transport_name"], reply["transport_type"]), (self.tn, "ussd"))
        for name in ("transport_metadata", "helper_metadata", "routing_metadata"):
            self.assertEqual(reply[name], {})
        self.assertRegex(reply["timestamp"], VUMI_TS)
        self.assertEqual((reply["message_version"], reply["message_type"]), ("20110921", "user_message"))
        self.assertIsNone(reply["session_event"])
        Message.from_json(json.dumps(reply))

    async def test_vumi2_event_without_transport_name(self) -> None:
        """A vumi2-style ack without transport_name reaches the sandbox as inbound-event."""
        await self.setup_transport()
        await self.start_worker()
        await self.listen()
        event = {"message_version": "20110921", "message_type": "event", "event_id": "ev-1",
                 "event_type": "ack", "user_message_id": "m-1", "sent_message_id": "ext-1",
                 "timestamp": "2024-03-01 10:00:00.000000", "helper_metadata": {}, "routing_metadata": {}}
        await self.transport.publish(f"{self.tn}.event", json.dumps(event).encode())
        [probe] = await self.replies.wait_for(1)
        seen = json.loads(probe["content"])
        self.assertEqual(seen, {"event_type": "ack", "user_message_id": "m-1", "event_id": "ev-1",
                                "transport_name": None})
        self.assertEqual(probe["to_addr"], "event-probe")
        self.assertEqual(probe["transport_name"], self.tn)

    async def test_close_session_reaches_sandbox(self) -> None:
        """A close-session message reaches the sandbox (its echo closes the session too)."""
        await self.setup_transport()
        await self.start_worker()
        await self.listen()
        inbound = vumi_message(self.tn, session_event="close", content=None)
        await self.transport.publish(f"{self.tn}.inbound", json.dumps(inbound).encode())
        [reply] = await self.replies.wait_for(1)
        self.assertEqual(reply["in_reply_to"], inbound["message_id"])
        self.assertEqual(reply["content"], "echo: None")
        self.assertEqual(reply["session_event"], "close")

    async def test_malformed_body_dead_lettered(self) -> None:
        """A malformed body lands in <queue>.dead (x-death: rejected) and the next good message is answered."""
        await self.setup_transport()
        service = await self.start_worker()
        await self.listen()
        await self.transport.publish(f"{self.tn}.inbound", b"{this is not json")
        good = vumi_message(self.tn)
        await self.transport.publish(f"{self.tn}.inbound", json.dumps(good).encode())
        [reply] = await self.replies.wait_for(1)
        self.assertEqual(reply["in_reply_to"], good["message_id"])
        dead = await self.transport.get(f"{self.tn}.inbound.dead")
        assert dead is not None
        body, headers = dead
        self.assertEqual(body, b"{this is not json")
        self.assertEqual(headers["x-death"][0]["reason"], "rejected")
        self.assertEqual(headers["x-death"][0]["queue"], f"{self.tn}.inbound")
        self.assertEqual(service.counts["invalid"], 1)
        self.assertEqual(await queue_length(self.transport, f"{self.tn}.inbound"), 0)

    async def test_large_non_ascii_body_over_many_frames(self) -> None:
        """A UTF-8 body larger than one AMQP frame arrives byte for byte."""
        await self.setup_transport()
        await self.listen()
        body = json.dumps({"text": "ñ日本😀" * 60000}, ensure_ascii=False).encode("utf-8")
        self.assertGreater(len(body), 3 * 131072)
        await self.transport.publish(f"{self.tn}.outbound", body)
        [got] = await self.replies.wait_for(1)
        self.assertEqual(json.dumps(got, ensure_ascii=False).encode("utf-8"), body)

    # --- load, scale-out, failures ---------------------------------------------------

    async def test_thousand_messages_prefetch_20(self) -> None:
        """1,000 messages with prefetch 20 each get exactly one reply."""
        await self.setup_transport()
        service = await self.start_worker(prefetch=20, messages_per_process=100)
        await self.listen()
        messages = [vumi_message(self.tn, i) for i in range(1000)]
        started = time.monotonic()
        await self.publish_all(f"{self.tn}.inbound", [json.dumps(m).encode() for m in messages])
        await self.replies.wait_for(1000, timeout=150)
        elapsed = time.monotonic() - started
        await sleep(0.5)
        counts = Counter(r["in_reply_to"] for r in self.replies.bodies)
        self.assertEqual(set(counts), {m["message_id"] for m in messages})
        self.assertEqual(set(counts.values()), {1})
        self.assertEqual(service.counts["ok"], 1000)
        print(f"\n1000 messages, prefetch 20: {elapsed:.1f}s ({1000 / elapsed:.0f} msg/s)")

    async def test_two_worker_processes_share_the_load(self) -> None:
        """Two `vxsandbox run` processes on one transport share the messages; exactly one reply each."""
        await self.setup_transport()
        await self.listen()
        workers = [self.spawn_worker(prefetch=10), self.spawn_worker(prefetch=10)]
        for w in workers:
            await w.wait_for_log("running;")
        messages = [vumi_message(self.tn, i) for i in range(300)]
        started = time.monotonic()
        await self.publish_all(f"{self.tn}.inbound", [json.dumps(m).encode() for m in messages])
        await self.replies.wait_for(300, timeout=150)
        elapsed = time.monotonic() - started
        for w in workers:
            w.transport.signalProcess("TERM")
        codes = [await w.ended for w in workers]
        self.assertEqual(codes, [0, 0])
        counts = Counter(r["in_reply_to"] for r in self.replies.bodies)
        self.assertEqual(set(counts), {m["message_id"] for m in messages})
        self.assertEqual(set(counts.values()), {1})
        shares = [int(re.search(r"'ok': (\d+)", w.log).group(1)) for w in workers]  # type: ignore[union-attr]
        self.assertEqual(sum(shares), 300)
        self.assertTrue(all(s > 0 for s in shares), shares)
        print(f"\n300 messages over two worker processes: {elapsed:.1f}s, shares {shares}")

    async def test_reconnect_when_connection_dropped(self) -> None:
        """RabbitMQ dropping the worker's connection mid-load: it reconnects and every message is answered."""
        await self.setup_transport()
        # 500 runs of 0.2 s, 20 at a time (the prefetch): the load lasts at least 5 s, which leaves
        # rabbitmqctl (seconds of Erlang start-up on a loaded machine) time to close it mid-load.
        service = await self.start_worker(delay=0.2, prefetch=20, messages_per_process=100)
        await self.listen()
        broker = service.broker
        assert isinstance(broker, AmqpBroker) and broker.connection is not None
        connection = await connection_on_port(broker.connection.client.transport.getHost().port)
        messages = [vumi_message(self.tn, i) for i in range(500)]
        await self.publish_all(f"{self.tn}.inbound", [json.dumps(m).encode() for m in messages])
        await self.replies.wait_for(50, timeout=60)
        await close_connection(connection)
        self.assertLess(len(self.replies.bodies), 500, "the load was over before the connection closed")
        deadline = time.monotonic() + 30
        while broker.connections_made < 2:
            assert time.monotonic() < deadline, "no new connection within 30 s"
            await sleep(0.05)
        await self.replies.wait_for(500, timeout=150, key="in_reply_to")
        await sleep(1.0)
        counts = Counter(r["in_reply_to"] for r in self.replies.bodies)
        self.assertEqual(set(counts), {m["message_id"] for m in messages})
        duplicates = sum(counts.values()) - len(counts)
        print(f"\nconnection dropped after {50}+ replies: 500 answered, {duplicates} duplicate replies, "
              f"{broker.connections_made} connections")
        self.assertEqual(await queue_length(self.transport, f"{self.tn}.inbound"), 0)

    async def test_sigterm_with_runs_in_flight(self) -> None:
        """SIGTERM while runs are in flight: they finish, replies are published, deliveries acked, exit 0."""
        await self.setup_transport()
        await self.listen()
        worker = self.spawn_worker(delay=1.5)
        await worker.wait_for_log("running;")
        messages = [vumi_message(self.tn, i) for i in range(5)]
        await self.publish_all(f"{self.tn}.inbound", [json.dumps(m).encode() for m in messages])
        await sleep(0.6)
        self.assertEqual(self.replies.bodies, [])
        worker.transport.signalProcess("TERM")
        code = await worker.ended
        self.assertEqual(code, 0, worker.log)
        self.assertIn("for 5 sandbox run(s) in flight", worker.log)
        await self.replies.wait_for(5, timeout=10)
        self.assertEqual({r["in_reply_to"] for r in self.replies.bodies}, {m["message_id"] for m in messages})
        self.assertEqual(await queue_length(self.transport, f"{self.tn}.inbound"), 0)

    async def test_non_ascii_routing_key_is_published_and_consumed(self) -> None:
        """A transport named in non-ASCII text gets its messages both ways (txamqp wrote such a routing key's
        length in characters, and the broker dropped the connection on the corrupt frame)."""
        self.tn = f"vxtest_ñandú_{uuid.uuid4().hex[:12]}"
        self.transport = AmqpBroker(connection_name=f"vxsandbox-test transport {self.tn}")
        await self.transport.connect()
        self.addCleanup(self.cleanup_transport)
        self.replies = Collector()
        await self.listen()
        await self.transport.publish(f"{self.tn}.outbound", json.dumps({"to": "ñandú"}).encode())
        await self.replies.wait_for(1)
        self.assertEqual(self.replies.bodies, [{"to": "ñandú"}])
        assert self.transport.connection is not None
        self.assertEqual(self.transport.connections_made, 1)

    async def test_publish_waits_for_connection(self) -> None:
        """A publish made while disconnected waits for the reconnection instead of being lost."""
        await self.setup_transport()
        await self.listen()
        broker = AmqpBroker(connection_name=f"vxsandbox-test publisher {self.tn}")
        await broker.connect()
        self.addCleanup(lambda: Deferred.fromCoroutine(broker.close()))
        assert broker.connection is not None
        port = broker.connection.client.transport.getHost().port
        lost = broker.connection.lost
        await close_connection_on_port(port)
        await lost
        await broker.publish(f"{self.tn}.outbound", b'{"after": "reconnect"}')
        await self.replies.wait_for(1)
        self.assertEqual(self.replies.bodies, [{"after": "reconnect"}])
        self.assertEqual(broker.connections_made, 2)


async def connection_on_port(port: int) -> str:
    """RabbitMQ's name (pid) for the one connection whose client port is ``port``."""
    out, err, code = await getProcessOutputAndValue(
        "rabbitmqctl", ["-q", "list_connections", "pid", "peer_port"], env=dict(os.environ))
    pids = [line.split("\t")[0] for line in out.decode().splitlines()
            if line.strip().endswith("\t" + str(port))]
    assert pids, f"no connection from port {port}: {out!r} {err!r}"
    return pids[0]


async def close_connection(pid: str) -> None:
    """Make RabbitMQ close the connection ``pid``."""
    out, err, code = await getProcessOutputAndValue(
        "rabbitmqctl", ["-q", "close_connection", pid, "vxsandbox test"], env=dict(os.environ))
    assert code == 0, err


async def close_connection_on_port(port: int) -> None:
    """Make RabbitMQ close the one connection whose client port is ``port``."""
    await close_connection(await connection_on_port(port))


class AmqpUrlTests(SynchronousTestCase):
    def test_default_url(self) -> None:
        """The default URL means guest on localhost, vhost '/'."""
        url = AmqpUrl.parse("amqp://guest:guest@127.0.0.1:5672/%2F")
        self.assertEqual((url.host, url.port, url.username, url.password, url.vhost, url.heartbeat),
                         ("127.0.0.1", 5672, "guest", "guest", "/", 60))

    def test_parts(self) -> None:
        """Vhost, credentials (percent-decoded) and heartbeat are read from the URL."""
        url = AmqpUrl.parse("amqp://u%40x:p%2Fw@rabbit:5673/tea?heartbeat=5")
        self.assertEqual((url.username, url.password, url.host, url.port, url.vhost, url.heartbeat),
                         ("u@x", "p/w", "rabbit", 5673, "tea", 5))
        self.assertEqual(url.safe(), "amqp://u@x@rabbit:5673/tea")

    def test_bad_urls(self) -> None:
        """Other schemes, bad ports and unknown options are config errors."""
        for bad in ("amqps://h/", "http://h/", "amqp://h:port/", "amqp://h/?x=1", 5):
            with self.assertRaises(ConfigError):
                AmqpUrl.parse(bad)  # type: ignore[arg-type]


class FieldTableTests(SynchronousTestCase):
    def test_decodes_rabbitmq_types(self) -> None:
        """Header tables with arrays, timestamps, longs and nested tables (as in x-death) are read."""
        raw = BytesIO()
        entries = (b"\x06reasonS\x00\x00\x00\x08rejected" + b"\x05countl" + (2).to_bytes(8, "big")
                   + b"\x04timeT" + (1700000000).to_bytes(8, "big") + b"\x04keysA"
                   + (5 + 6).to_bytes(4, "big") + b"S\x00\x00\x00\x01a" + b"t\x01" + b"V" + b"b\xff")
        x_death_entry = len(entries).to_bytes(4, "big") + entries
        array = b"F" + x_death_entry
        table = b"\x07x-deathA" + len(array).to_bytes(4, "big") + array
        raw.write(len(table).to_bytes(4, "big") + table)
        raw.seek(0)
        decoded = Codec(raw).decode_table()
        self.assertEqual(decoded, {"x-death": [{"reason": "rejected", "count": 2, "time": 1700000000,
                                                "keys": ["a", True, None, -1]}]})
