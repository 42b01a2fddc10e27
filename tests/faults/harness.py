"""The fault suite's bench: a real worker on RabbitMQ with Redis kv, a transport's side, and both logs.

Every test publishes messages as a Vumi transport would, attacks, and then
counts: replies on ``<transport>.outbound``, dead letters on
``<transport>.inbound.dead``, deliveries settled by the service. It reads
what the app's owner saw (the ``log`` resource's lines, per sandbox_id) and
what the operator saw (the worker's Python log records).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from vxsandbox_core.brokers import Delivery
from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.registry import resolve_worker
from vxsandbox_core.service import WorkerService
from vxsandbox_core.testing import hooks_with
from vxsandbox_resources_log import LoggingResource

#: sandbox_id of the attacking tenant's messages; well-behaved ones use GOOD
ATTACKER = "attacker"
GOOD = "good"

#: One JavaScript app for every attack: a message's content says what it does.
ABUSE_APP = r"""
var fs = require('fs');
// Blocking writes, as a hostile app would use: nothing piles up in the app's own heap.
function raw(text) { fs.writeSync(1, text); }
function line(obj) { raw(JSON.stringify(obj) + '\n'); }
api.on_inbound_message = function (command) {
    var self = this;
    var msg = command.msg;
    var what = msg.content || '';
    function reply(text) {
        self.request('outbound.reply_to', {in_reply_to: msg.message_id, content: text,
                                           continue_session: false}, function () { self.done(); });
    }
    if (what === 'ok') { return reply('ok'); }
    if (what === 'slow') { return setTimeout(function () { reply('slow'); }, 500); }
    if (what === 'kv') {
        return self.request('kv.incr', {key: 'visits'}, function (r) {
            reply(r.success ? 'visits ' + r.value : 'kv failed: ' + r.reason);
        });
    }
    if (what === 'loop') { for (;;) {} }
    if (what === 'promise-loop') {
        var spin = function () { Promise.resolve().then(spin); };
        return spin();
    }
    if (what === 'memory') { var hog = []; for (;;) { hog.push(new Array(1e6).fill(7)); } }
    if (what === 'fork') { require('child_process').execFileSync('/bin/true'); return reply('forked'); }
    if (what === 'write') { require('fs').writeFileSync('/tmp/vxsandbox-fault-write', 'x'); return reply('wrote'); }
    if (what === 'stdout-flood') { for (;;) { raw('{"cmd": "log.info", "msg": "' + 'x'.repeat(4000) + '"}\n'); } }
    if (what === 'endless-line') { for (;;) { raw('x'.repeat(65536)); } }
    if (what === 'request-flood') {
        for (var i = 0; i < 20000; i++) { self.request('kv.get', {key: 'k' + i}); }
        return reply('flooded');
    }
    if (what === 'after-done') {
        // One write (under PIPE_BUF, so atomic): the late requests are in the pipe before the
        // worker can act on js.done, whatever the scheduler does.
        raw([{cmd: 'js.done', cmd_id: 'done', reply: false},
             {cmd: 'outbound.reply_to', cmd_id: 'late', reply: false, in_reply_to: msg.message_id,
              content: 'after done', continue_session: false},
             {cmd: 'kv.set', cmd_id: 'late-kv', reply: false, key: 'after-done', value: 1}]
            .map(function (c) { return JSON.stringify(c) + '\n'; }).join(''));
        return;
    }
    if (what === 'bogus-replies') {
        for (var j = 0; j < 1000; j++) { line({cmd: 'kv.get', cmd_id: 'never-' + j, reply: true, success: true}); }
        return reply('bogus sent');
    }
    if (what === 'bad-utf8') {
        var bad = require('buffer').Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a]);
        for (var k = 0; k < 1000; k++) { fs.writeSync(1, bad); }
        return reply('bad utf8 sent');
    }
    // One tenant exhausting the worker: replies never read, log floods, metric names, http.
    if (what === 'deaf') {
        raw(JSON.stringify({cmd: 'kv.set', cmd_id: 'big', reply: false, key: 'big', value: 'v'.repeat(60000)}) + '\n');
        // Batches under max_pending_requests, a pause for their replies to arrive, and never a read:
        // Atomics.wait blocks the thread without spinning, so the attack costs no CPU.
        var cell = new Int32Array(new SharedArrayBuffer(4));
        for (var d = 0; d < 160; d++) {
            line({cmd: 'kv.get', cmd_id: 'g' + d, reply: false, key: 'big'});
            if (d % 40 === 39) { Atomics.wait(cell, 0, 0, 150); }
        }
        Atomics.wait(cell, 0, 0);
    }
    if (what === 'stderr-flood') { fs.writeSync(2, 'x\n'.repeat(400000)); return reply('stderr sent'); }
    if (what === 'log-flood') {
        var logged = 0;
        for (var n = 0; n < 3000; n++) {
            self.request('log.info', {msg: 'flood ' + n}, function () { if (++logged === 3000) { reply('logged'); } });
        }
        return;
    }
    if (what === 'metric-flood') {
        var fired = 0, accepted = 0;
        for (var f = 0; f < 500; f++) {
            self.request('metrics.fire', {metric: 'm' + f + '.' + msg.message_id, value: 1, agg: 'sum'}, function (r) {
                accepted += r.success ? 1 : 0;
                if (++fired === 500) { reply('metrics accepted ' + accepted); }
            });
        }
        return;
    }
    if (what === 'header-flood' || what === 'http-hold') {
        var url = msg.transport_metadata.url + (what === 'header-flood' ? '/headers' : '/slow');
        var count = what === 'header-flood' ? 1 : 100, answered = 0, failures = {};
        for (var h = 0; h < count; h++) {
            self.request('http.get', {url: url}, function (r) {
                var why = r.success ? 'ok' : r.reason.replace(/^.*(max_[a-z_]+).*$/, '$1');
                failures[why] = (failures[why] || 0) + 1;
                if (++answered === count) { reply(JSON.stringify(failures)); }
            });
        }
        return;
    }
    if (what === 'deep-json') { raw('['.repeat(200000) + ']'.repeat(200000) + '\n'); return reply('deep sent'); }
    if (what === 'big-line') {
        var mib = 'y'.repeat(1024 * 1024);
        raw('{"cmd": "log.info", "msg": "');
        for (var m = 0; m < 50; m++) { raw(mib); }
        raw('"}\n');
        return reply('big sent');
    }
    reply('unknown: ' + what);
};
"""


class OwnerLog(LoggingResource):
    """The ``log`` resource, also keeping every line (what the app's owner sees) for assertions."""

    def setup(self) -> None:
        self.lines: list[tuple[str, int, str]] = []

    def log(self, api: Any, msg: str, level: int) -> Deferred[None]:
        self.lines.append((api.sandbox_id, level, msg))
        return succeed(None)


class RecordsHandler(logging.Handler):
    """Keeps every Python log record of the worker (what the operator sees)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await sleep(0.05)


def vumi_message(transport: str, content: str, sandbox_id: str | None = GOOD, **fields: Any) -> dict[str, Any]:
    """A user message as a Vumi transport puts it on the wire."""
    msg: dict[str, Any] = {
        "message_version": "20110921", "message_type": "user_message", "message_id": uuid.uuid4().hex,
        "to_addr": "*120*8864#", "from_addr": "+27831234567", "in_reply_to": None, "session_event": "resume",
        "content": content, "transport_name": transport, "transport_type": "ussd",
        "transport_metadata": {}, "helper_metadata": {}, "routing_metadata": {}, "group": None,
        "provider": None, "timestamp": "2026-11-28 10:00:00.000000",
    }
    if sandbox_id is not None:
        msg["sandbox_id"] = sandbox_id
    msg.update(fields)
    return msg


def abuse_config(transport: str, **extra: Any) -> dict[str, Any]:
    """A ``js`` worker config running :data:`ABUSE_APP` with kv (shared Redis), outbound and the owner's log."""
    config: dict[str, Any] = {
        "worker": "js",
        "transport_name": transport,
        "sandbox_id": GOOD,
        "javascript": ABUSE_APP,
        "app_context": "{require: require}",
        "timeout": 3,
        "amqp_prefetch_count": 20,
        "sandbox": {
            "log": {"cls": f"{OwnerLog.__module__}:OwnerLog"},
            "kv": {"cls": "kv", "redis_manager": {"url": "redis://127.0.0.1:6379/0",
                                                  "key_prefix": f"vxfault:{transport}"}},
            "outbound": {"cls": "outbound"},
            "metrics": {"cls": "metrics"},
            "http": {"cls": "http", "allowed_hosts": ["127.0.0.1"], "timeout": 2},
        },
    }
    config.update(extra)
    return config


class _HostileHttp(Protocol):
    """Answers ``/headers`` with endless 8 KB header lines and ``/slow`` with nothing at all."""

    def __init__(self, server: HostileHttpServer) -> None:
        self.server = server
        self.request = b""
        self.flooding = False

    def connectionMade(self) -> None:
        self.server.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        if self.request.endswith(b"\r\n\r\n"):
            return
        self.request += data
        if self.request.startswith(b"GET /headers") and self.request.endswith(b"\r\n\r\n"):
            self.flooding = True
            self.transport.write(b"HTTP/1.1 200 OK\r\n")
            self.transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.flooding:
            chunk = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"h" * 8000) for i in range(8))
            self.server.header_bytes_sent += len(chunk)
            self.transport.write(chunk)

    def stopProducing(self) -> None:
        self.flooding = False

    def connectionLost(self, reason: Any = None) -> None:
        self.flooding = False
        self.server.connections.remove(self)


class HostileHttpServer:
    """A server on 127.0.0.1 an app can point the http resource at: header floods and requests never answered."""

    def __init__(self) -> None:
        self.connections: list[_HostileHttp] = []
        self.header_bytes_sent = 0
        self.port = reactor.listenTCP(0, Factory.forProtocol(lambda: _HostileHttp(self)), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def stop(self) -> Deferred[Any]:
        for connection in list(self.connections):
            connection.transport.abortConnection()
        return self.port.stopListening()


class FaultBench:
    """Mixin for trial TestCases: a transport's side of RabbitMQ, a worker service, and the two logs."""

    tn: str
    service: WorkerService
    transport: AmqpBroker
    replies: list[dict[str, Any]]
    records: RecordsHandler

    async def open_bench(self) -> None:
        """Create a unique transport, consume its outbound queue and capture the worker's log."""
        self.tn = f"vxfault_{uuid.uuid4().hex[:10]}"
        self.replies = []
        self.records = RecordsHandler()
        root = logging.getLogger()
        root.addHandler(self.records)
        old_level = root.level
        root.setLevel(logging.INFO)
        self.addCleanup(root.setLevel, old_level)  # type: ignore[attr-defined]
        self.addCleanup(root.removeHandler, self.records)  # type: ignore[attr-defined]
        self.transport = AmqpBroker(connection_name=f"vxsandbox-fault transport {self.tn}")
        await self.transport.connect()
        self.addCleanup(self._close_transport)  # type: ignore[attr-defined]
        await self.transport.consume(f"{self.tn}.outbound", self._on_reply)

    def _close_transport(self) -> Deferred[None]:
        async def close() -> None:
            await self.transport.delete_queues(f"{self.tn}.inbound", f"{self.tn}.event", f"{self.tn}.outbound")
            await self.transport.close()
        return Deferred.fromCoroutine(close())

    async def _on_reply(self, delivery: Delivery) -> None:
        self.replies.append(json.loads(delivery.body))
        await delivery.ack()

    async def start_worker(self, **extra: Any) -> WorkerService:
        """Start the abuse app's worker on its own AMQP connection."""
        config = abuse_config(self.tn, **extra)
        worker_cls = resolve_worker(config["worker"])
        broker = AmqpBroker(prefetch_count=config["amqp_prefetch_count"],
                            connection_name=f"vxsandbox-fault worker {self.tn}")
        worker = worker_cls(config, broker=broker, hooks=hooks_with(*getattr(self, "plugins", ())))
        self.service = WorkerService(worker, broker)
        await self.service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.service.stop()))  # type: ignore[attr-defined]
        return self.service

    async def publish(self, *messages: dict[str, Any] | bytes, queue: str = "inbound") -> None:
        await gatherResults([
            Deferred.fromCoroutine(self.transport.publish(
                f"{self.tn}.{queue}", m if isinstance(m, bytes) else json.dumps(m).encode("utf-8")))
            for m in messages])

    def settled(self) -> int:
        """Deliveries the service has settled (acked, dead-lettered or requeued)."""
        return sum(self.service.counts.values())

    async def wait_settled(self, n: int, timeout: float = 30) -> None:
        await wait_until(lambda: self.settled() >= n and not self.service.in_flight, timeout,
                         f"{n} settled deliveries (have {dict(self.service.counts)})")

    def replies_to(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = {m["message_id"] for m in messages}
        return [r for r in self.replies if r.get("in_reply_to") in ids]

    async def wait_replies(self, messages: list[dict[str, Any]], timeout: float = 30) -> None:
        ids = {m["message_id"] for m in messages}
        await wait_until(lambda: ids <= {r.get("in_reply_to") for r in self.replies}, timeout,
                         f"replies to {len(ids)} messages (have {len(self.replies_to(messages))})")

    async def dead_letters(self, queue: str = "inbound") -> int:
        return await self.transport.queue_length(f"{self.tn}.{queue}.dead")

    async def assert_dead_letters(self, n: int, queue: str = "inbound", timeout: float = 10) -> None:
        """Exactly ``n`` messages reach the dead-letter queue (a reject is routed there asynchronously)."""
        deadline = time.monotonic() + timeout
        while (count := await self.dead_letters(queue)) < n and time.monotonic() < deadline:
            await sleep(0.05)
        assert count == n, f"{count} dead letters in {self.tn}.{queue}.dead, expected {n}"

    async def still_serves(self, n: int = 3, content: str = "ok") -> None:
        """The worker answers ``n`` well-behaved messages."""
        good = [vumi_message(self.tn, content) for _ in range(n)]
        await self.publish(*good)
        await self.wait_replies(good)

    # --- what people see -----------------------------------------------------------------

    def owner_lines(self, sandbox_id: str = ATTACKER) -> list[str]:
        """What the app's owner saw in the ``log`` resource, for one tenant."""
        log = self.service.worker.resources.resources["log"]
        return [msg for sid, _, msg in log.lines if sid == sandbox_id]

    def operator_lines(self, sandbox_id: str = ATTACKER, level: int = logging.WARNING) -> list[str]:
        """The worker's log lines at ``level`` or above that concern a tenant."""
        return [r.getMessage() for r in self.records.records
                if r.levelno >= level and f"[{sandbox_id}]" in r.getMessage()]

    def assert_no_tracebacks(self) -> None:
        """No worker log record carries a traceback."""
        spam = [r.getMessage()[:200] for r in self.records.records
                if r.exc_info or "Traceback (most recent call last)" in r.getMessage()]
        assert not spam, spam

    def assert_operator_quiet(self, sandbox_id: str = ATTACKER, max_lines: int = 2) -> list[str]:
        """The operator saw at most ``max_lines`` lines about the tenant, and no traceback."""
        lines = self.operator_lines(sandbox_id)
        assert 1 <= len(lines) <= max_lines, lines[:10] + [f"... {len(lines)} lines"]
        self.assert_no_tracebacks()
        return lines


def node_path() -> str:
    path = shutil.which("node")
    assert path is not None, "node is not on PATH"
    return os.path.realpath(path)
