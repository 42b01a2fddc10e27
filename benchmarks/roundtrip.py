"""Round-trip benchmark: a Vumi transport drives the real worker through RabbitMQ and measures replies.

Run by hand (RabbitMQ on 127.0.0.1:5672, Redis on 127.0.0.1:6379, node on
PATH, ``npm ci --prefix examples/vumigo_app`` for the vumigo_v02 app)::

    python benchmarks/roundtrip.py [--json] [--apps js,vumigo,python] [--modes cold,prefork,warm]
    python benchmarks/roundtrip.py --rss 100000      # worker RSS over a long warm run
    python benchmarks/roundtrip.py --rss 10000 --rss-app vumigo   # one warm toolkit child's RSS
    python benchmarks/roundtrip.py --apps js,vumigo --no-snapshot   # the vumigo app with snapshot: false
    python benchmarks/roundtrip.py --apps js,vumigo --modes warm --runs-per-child 10   # 10 messages at once per child

This process plays the transport: it publishes raw Vumi JSON user messages to
``<transport>.inbound`` on the ``vumi`` exchange and consumes the replies from
``<transport>.outbound``, with txamqp as the worker does. The worker is
``vxsandbox run -c <config>`` in its own process. Each app and mode is
measured three ways: at low load (one message every 250 ms), with one
message in flight (each sent when the previous one was answered), and at
saturation (all N published at once; the worker's prefetch is 20). The
floors and warm modes are saturated ``--repeat`` times and the best run
counts, since other work on a shared machine only ever slows a run down.

Apps: ``js`` (an app that only does ``outbound.reply_to`` then ``done``),
``vumigo`` (the vumigo_v02 example with ``kv`` on Redis), ``python``
(``vxsandbox_core.testing.echo_child``). Modes: ``cold`` (a process per
message), ``prefork`` (a process per message, two started ahead), ``warm``
(a child serves up to 1000 messages of its sandbox_id, JS in a fresh vm
context each; with ``--runs-per-child N`` up to N of them at once).

The same run measures the floors with the same client library: the RabbitMQ
echo (a minimal txamqp consumer that republishes), the echo through one warm
node child that runs each message in a fresh vm context (no vxsandbox code),
with ``vumigo`` the same for the toolkit app (its kv, config, log and metrics
answered inside that node process, only ``outbound.reply_to`` and ``done``
crossing to the floor worker), and the bare ``node -e 0`` spawn. Queues are unique per run and deleted at
the end; all traffic stays on the loopback interface.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol
from txamqp.client import TwistedDelegate
from txamqp.content import Content
from txamqp.protocol import AMQClient

from vxsandbox_core.rlimits import rlimit_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VUMIGO_APP = os.path.join(ROOT, "examples", "vumigo_app", "app.js")
REDIS_URL = "redis://127.0.0.1:6379/0"
EXCHANGE = "vumi"
PREFETCH = 20
CORES = os.cpu_count() or 1

#: the reply-only app: one outbound.reply_to, then done
REPLY_APP = """
api.on_inbound_message = function (command) {
    var msg = command.msg;
    this.request('outbound.reply_to', {in_reply_to: msg.message_id, content: 'echo: ' + msg.content,
                                       continue_session: true}, function () { this.done(); });
};
"""

#: messages per (app, mode): (one in flight, at saturation); cold runs are bounded by ~30 spawns/s
COUNTS = {
    ("js", "cold"): (20, 150), ("js", "prefork"): (30, 150), ("js", "warm"): (200, 2000),
    ("vumigo", "cold"): (10, 60), ("vumigo", "prefork"): (15, 60), ("vumigo", "warm"): (100, 1000),
    ("python", "cold"): (20, 200), ("python", "prefork"): (30, 200), ("python", "warm"): (200, 2000),
}
MODES = {"cold": (1, 0), "prefork": (1, 2), "warm": (1000, 0)}
#: the low-load measurement: PACED messages, one every PACE seconds (time enough to start a spare)
PACED, PACE = 41, 0.25
#: the bare app's floor row: the app in one warm node, a fresh vm context per message
NODE_FLOOR = "floor: echo + warm node, fresh vm"
#: the toolkit floor's row: the vumigo app in one warm node, its resources answered in that process
VUMIGO_FLOOR = "floor: echo + warm node, vumigo app"

# The floors' node children read JSON lines from stdin: a reply goes to its pending callback,
# anything else is a message for runMessage(cmd, id), which each child defines.
NODE_LINE_LOOP = r"""
process.stdin.setEncoding('utf8');
process.stdin.on('data', function (chunk) {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 1);
        if (cmd.reply) {
            const callback = pending.get(cmd.cmd_id);
            pending.delete(cmd.cmd_id);
            callback(cmd);
        } else {
            runMessage(cmd, cmd.id);
        }
    }
});
process.stdin.on('end', function () { process.exit(0); });
"""

# The floor's node child: every message runs the app's code in a fresh vm context, and the app
# makes one request and then says done (4 JSON lines per message, as a warm sandbox run makes).
NODE_ECHO_CHILD = r"""
'use strict';
const vm = require('vm');
const script = new vm.Script(process.argv[1]);
const pending = new Map();
let buffer = '';
function write(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }
function runMessage(cmd, id) {
    const api = {
        request: function (name, fields, cb) {
            fields.cmd = name; fields.cmd_id = id; fields.reply = false;
            pending.set(id, cb); write(fields);
        },
        done: function () { write({cmd: 'done', cmd_id: id, reply: false}); },
    };
    const ctx = vm.createContext({api: api});
    script.runInContext(ctx);
    ctx.api.on_inbound_message(cmd);
}
""" + NODE_LINE_LOOP
NODE_ECHO_APP = """
api.on_inbound_message = function (command) {
    var msg = command.msg;
    api.request('outbound.reply_to', {in_reply_to: msg.message_id, content: 'echo: ' + msg.content},
                function () { api.done(); });
};
"""


# The toolkit floor's node child: the vumigo_v02 example app (argv[1]) in a fresh vm context per
# message, with its resources answered inside the process (kv in a Map, config, log, metrics), so
# only outbound.reply_to and done cross to the floor worker: the cheapest a toolkit message can be.
NODE_VUMIGO_CHILD = r"""
'use strict';
const fs = require('fs');
const vm = require('vm');
const Module = require('module');
const appFile = process.argv[1];
const script = new vm.Script(fs.readFileSync(appFile, 'utf8'), {filename: appFile});
const appRequire = Module.createRequire(appFile);
const kv = new Map();
const pending = new Map();
const config = {config: JSON.stringify({name: 'Tea Time'})};
let buffer = '';
function write(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }
function local(name, fields) {
    if (name === 'kv.get') { return {success: true, value: kv.has(fields.key) ? kv.get(fields.key) : null}; }
    if (name === 'kv.set') { kv.set(fields.key, fields.value); return {success: true}; }
    if (name === 'kv.delete') { kv.delete(fields.key); return {success: true}; }
    if (name === 'kv.incr') {
        const value = (kv.get(fields.key) || 0) + (fields.amount || 1);
        kv.set(fields.key, value);
        return {success: true, value: value};
    }
    if (name === 'config.get') {
        return {success: true, value: config[fields.key] === undefined ? null : config[fields.key]};
    }
    if (name.startsWith('log.') || name === 'metrics.fire') { return {success: true}; }
    return {success: false, reason: 'no stand-in for ' + name};
}
function runMessage(cmd, id) {
    const api = {
        request: function (name, fields, cb) {
            const self = this;
            const callback = typeof cb === 'function' ? function (reply) { cb.call(self, reply); } : function () {};
            if (name === 'outbound.reply_to') {
                const out = Object.assign({}, fields, {cmd: name, cmd_id: id, reply: false});
                pending.set(id, callback); write(out);
            } else {
                const reply = local(name, fields || {});
                setImmediate(callback, reply);
            }
        },
        log: function (msg, level, cb) { this.request('log.' + (level || 'info'), {msg: msg}, cb); },
        log_info: function (msg, cb) { this.request('log.info', {msg: msg}, cb); },
        done: function () { write({cmd: 'done', cmd_id: id, reply: false}); },
    };
    const ctx = vm.createContext({api: api, require: appRequire, console: console});
    script.runInContext(ctx);
    const handler = api.on_inbound_message;
    handler.call(api, cmd);
}
""" + NODE_LINE_LOOP

# --- a minimal txamqp client (the transport, and the floor workers) ----------------------------

class Amqp:
    """One txamqp connection with one channel, TCP_NODELAY on, publishing to the ``vumi`` exchange."""

    def __init__(self) -> None:
        self.client: Any = None
        self.channel: Any = None
        self._channel_ids = iter(range(2, 65535))

    async def connect(self, reactor: Any) -> None:
        from vxsandbox_core.brokers.amqp import load_spec  # also fixes txamqp's body decoding
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", 5672, timeout=10)
        factory = Factory.forProtocol(lambda: AMQClient(TwistedDelegate(), "/", load_spec(), heartbeat=0,
                                                        clock=reactor))
        factory.noisy = False
        self.client = await endpoint.connect(factory)
        self.client.transport.setTcpNoDelay(True)
        await self.client.authenticate("guest", "guest")
        self.channel = await self.client.channel(1)
        await self.channel.channel_open()
        await self.channel.exchange_declare(exchange=EXCHANGE, type="direct", durable=True)

    async def declare(self, queue: str) -> None:
        await self.channel.queue_declare(queue=queue, durable=True)
        await self.channel.queue_bind(queue=queue, exchange=EXCHANGE, routing_key=queue)

    def publish(self, routing_key: str, body: bytes) -> None:
        content = Content(body, properties={"delivery-mode": 2, "content-type": "application/json"})
        self.channel.basic_publish(exchange=EXCHANGE, routing_key=routing_key, content=content)

    def ack(self, tag: int) -> None:
        self.channel.basic_ack(delivery_tag=tag)

    async def consume(self, queue: str, handler: Any, prefetch: int) -> None:
        """Call ``handler(msg)`` for every delivery (txamqp message; ``msg.content.body``)."""
        await self.channel.basic_qos(prefetch_count=prefetch)
        reply = await self.channel.basic_consume(queue=queue)
        deliveries = await self.client.queue(reply.consumer_tag)

        async def loop() -> None:
            while True:
                try:
                    msg = await deliveries.get()
                except Exception:
                    return
                handler(msg)
        defer.ensureDeferred(loop())

    async def consumers(self, queue: str) -> int:
        """Consumers of ``queue`` (0 when it does not exist yet), on a throwaway channel."""
        channel = await self.client.channel(next(self._channel_ids))
        await channel.channel_open()
        try:
            reply = await channel.queue_declare(queue=queue, passive=True)
            await channel.channel_close()
            return int(reply.consumer_count)
        except Exception:
            return 0

    async def delete(self, *queues: str) -> None:
        for queue in queues:
            channel = await self.client.channel(next(self._channel_ids))
            await channel.channel_open()
            try:
                await channel.queue_delete(queue=queue)
                await channel.channel_close()
            except Exception:
                pass

    async def close(self) -> None:
        try:
            await self.client.close(within=2)
        except Exception:
            self.client.transport.loseConnection()


# --- the floor workers (run as separate processes: roundtrip.py --serve KIND TRANSPORT) ----------

class NodeEchoProtocol(ProcessProtocol):
    """One warm node child; messages are multiplexed by id."""

    def __init__(self, on_line: Any) -> None:
        self.on_line = on_line
        self.buffer = b""

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.on_line(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        sys.stderr.write(data.decode("utf-8", "replace"))


async def serve_floor(reactor: Any, kind: str, transport: str) -> None:
    """A floor worker: republish every inbound message as its reply (through a node child for node-echo)."""
    amqp = Amqp()
    await amqp.connect(reactor)
    inbound, outbound = f"{transport}.inbound", f"{transport}.outbound"
    await amqp.declare(inbound)
    await amqp.declare(outbound)
    tags: dict[int, int] = {}
    child: Any = None

    def on_child_line(command: dict[str, Any]) -> None:
        n = command["cmd_id"]
        if command["cmd"] == "done":
            amqp.ack(tags.pop(n))
            return
        body = json.dumps({"message_type": "user_message", "in_reply_to": command["in_reply_to"],
                           "content": command["content"]}).encode()
        amqp.publish(outbound, body)
        child.transport.write(json.dumps({"reply": True, "cmd_id": n, "success": True}).encode() + b"\n")

    if kind in ("node-echo", "node-vumigo"):
        child = NodeEchoProtocol(on_child_line)
        node = shutil.which("node") or "node"
        script, arg = (NODE_ECHO_CHILD, NODE_ECHO_APP) if kind == "node-echo" else (NODE_VUMIGO_CHILD, VUMIGO_APP)
        reactor.spawnProcess(child, node, [node, "-e", script, arg], env=None)

    def on_message(msg: Any) -> None:
        tag = msg.delivery_tag
        if child is None:
            amqp.publish(outbound, msg.content.body)
            amqp.ack(tag)
            return
        tags[tag] = tag
        child.transport.write(b'{"cmd":"inbound-message","id":%d,"msg":%s}\n' % (tag, msg.content.body))

    await amqp.consume(inbound, on_message, PREFETCH)
    await defer.Deferred()  # until SIGTERM


# --- the transport side ---------------------------------------------------------------------------

def vumi_message(transport: str, n: int, user: str, content: str, session_event: str) -> dict[str, Any]:
    """A user message as a Vumi transport puts it on the wire."""
    return {
        "message_version": "20110921", "message_type": "user_message",
        "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "routing_metadata": {}, "helper_metadata": {}, "transport_metadata": {},
        "message_id": uuid.uuid4().hex, "to_addr": "*120*8864#", "from_addr": user,
        "from_addr_type": "msisdn", "to_addr_type": None, "group": None, "provider": None,
        "in_reply_to": None, "session_event": session_event, "content": content,
        "transport_name": transport, "transport_type": "ussd",
    }


class Transport:
    """Publishes user messages and times each reply, matched by ``in_reply_to``."""

    def __init__(self, reactor: Any, name: str) -> None:
        self.reactor = reactor
        self.name = name
        self.amqp = Amqp()
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.last_reply = 0.0
        self._waiter: tuple[int, defer.Deferred[None]] | None = None
        self.n = 0

    async def start(self) -> None:
        await self.amqp.connect(self.reactor)
        await self.amqp.declare(f"{self.name}.outbound")
        await self.amqp.consume(f"{self.name}.outbound", self._on_reply, 200)

    def _on_reply(self, msg: Any) -> None:
        now = time.perf_counter()
        self.amqp.ack(msg.delivery_tag)
        reply = json.loads(msg.content.body)
        sent = self.sent.pop(reply.get("in_reply_to") or reply.get("message_id"), None)
        if sent is None:
            return
        self.latencies.append(now - sent)
        self.last_reply = now
        if self._waiter is not None and len(self.latencies) >= self._waiter[0]:
            d = self._waiter[1]
            self._waiter = None
            d.callback(None)

    def send(self, app: str) -> None:
        self.n += 1
        if app == "vumigo":
            # a session starts for one of 50 users (the kv resource allows 100 keys per sandbox):
            # config.get, kv.get and kv.set of the user, log lines, the reply
            msg = vumi_message(self.name, self.n, f"+2783{self.n % 50:07d}", "", "new")
        else:
            msg = vumi_message(self.name, self.n, "+27831234567", f"hello {self.n}", "resume")
        body = json.dumps(msg).encode()
        self.sent[msg["message_id"]] = time.perf_counter()
        self.amqp.publish(f"{self.name}.inbound", body)

    async def replies(self, count: int, timeout: float) -> None:
        """Wait until ``count`` replies were timed in total."""
        if len(self.latencies) >= count:
            return
        d: defer.Deferred[None] = defer.Deferred()
        self._waiter = (count, d)
        d.addTimeout(timeout, self.reactor)
        await d

    async def one_in_flight(self, app: str, n: int, timeout: float) -> dict[str, float]:
        self.latencies = []
        start = time.perf_counter()
        for i in range(n):
            self.send(app)
            await self.replies(i + 1, timeout)
        return summary(self.latencies, time.perf_counter() - start)

    async def paced(self, app: str, n: int, interval: float, timeout: float) -> dict[str, float]:
        """One message every ``interval`` seconds (each answered first): the latency of a quiet worker."""
        self.latencies = []
        for i in range(n):
            start = time.perf_counter()
            self.send(app)
            await self.replies(i + 1, timeout)
            rest = interval - (time.perf_counter() - start)
            if rest > 0:
                await task.deferLater(self.reactor, rest, lambda: None)
        return summary(self.latencies, n * interval)

    async def saturate(self, app: str, n: int, timeout: float) -> dict[str, float]:
        self.latencies = []
        start = time.perf_counter()
        for _ in range(n):
            self.send(app)
        await self.replies(n, timeout)
        return summary(self.latencies, self.last_reply - start)


def summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    """Throughput and latency percentiles (milliseconds) of one measurement."""
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"n": len(ordered), "msg_per_s": len(ordered) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


# --- worker processes -------------------------------------------------------------------------------

def worker_config(app: str, mode: str, transport: str, key_prefix: str, snapshot: bool = True,
                  runs_per_child: int = 1) -> dict[str, Any]:
    """The ``vxsandbox run`` config for an app in a mode (the vumigo app with the default ``snapshot``, or
    ``snapshot: false`` unless ``snapshot``; warm children serving ``runs_per_child`` messages at once)."""
    per_process, prefork = MODES[mode]
    common = {"transport_name": transport, "sandbox_id": "bench", "amqp_prefetch_count": PREFETCH,
              "messages_per_process": per_process, "prefork": prefork, "timeout": 30,
              "runs_per_child": runs_per_child if mode == "warm" else 1}
    if app == "js":
        return {**common, "worker": "js", "javascript": REPLY_APP, "sandbox": {"outbound": {"cls": "outbound"}}}
    if app == "vumigo":
        return {**common, "worker": "js-standalone", "javascript_file": VUMIGO_APP,
                "app_context": "{require: require}",
                "sandbox": {"kv": {"cls": "kv", "redis_manager": {"url": REDIS_URL, "key_prefix": key_prefix}},
                            "outbound": {"cls": "outbound"},
                            "config": {"cls": "config", "values": {"config": {"name": "Tea Time"}}}},
                **({} if snapshot else {"snapshot": False})}
    from vxsandbox_core.testing import PYTHON_RLIMITS, echo_child
    return {**common, "worker": "sandbox", "executable": sys.executable, "args": echo_child(),
            "rlimits": dict(PYTHON_RLIMITS), "sandbox": {"outbound": {"cls": "outbound"}, "run": {"cls": "run"}}}


class WorkerProcess:
    """A worker in its own process: ``vxsandbox run`` or a floor worker."""

    def __init__(self, argv: list[str], log_path: str, tmpdir: str | None = None) -> None:
        self.log_path = log_path
        self.log = open(log_path, "wb")
        #: the worker's TMPDIR (where it makes its startup snapshots), when given one of its own
        self.tmpdir = tmpdir
        env = None
        if tmpdir is not None:
            os.makedirs(tmpdir, exist_ok=True)
            env = {**os.environ, "TMPDIR": tmpdir}
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                      cwd=ROOT, env=env)

    def cpu_seconds(self) -> float:
        from vxsandbox_core.pool import cpu_seconds
        return cpu_seconds(self.popen.pid)

    def cpu_breakdown(self) -> dict[str, float]:
        """CPU seconds so far of this worker, the broker, Redis, this process and the whole machine.

        The worker's children are what the machine used beyond those: a cold child
        killed at the end of its run takes its jail's processes with it, and the
        node inside is reaped by the host's init, so its time never reaches the
        worker's count of its reaped children.
        """
        stats = _proc_stats()
        own = stats.get(self.popen.pid)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return {"worker": own[1] if own else 0.0,
                "broker": sum(stat[1] for stat in stats.values() if stat[0] == "beam.smp"),
                "redis": sum(stat[1] for stat in stats.values() if stat[0] == "redis-server"),
                "transport": me.ru_utime + me.ru_stime, "machine": _machine_cpu_seconds()}

    def rss_kib(self) -> int:
        return _vm_rss_kib(self.popen.pid)

    def node_rss_kib(self) -> list[int]:
        """The RSS of each node process below the worker (inside bwrap and prlimit), largest first."""
        stats = _proc_stats()
        return sorted((_vm_rss_kib(pid) for pid in _descendants(self.popen.pid, stats) if stats[pid][0] == "node"),
                      reverse=True)

    async def stop(self, reactor: Any, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.05, lambda: None)
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        self.log.close()

    def tail(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")


def _proc_stats() -> dict[int, tuple[str, float, float, int]]:
    """Every process: pid -> (comm, own CPU seconds, reaped children's CPU seconds, ppid)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float, float, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(entry)] = (stat[stat.index("(") + 1:stat.rindex(")")], (int(fields[11]) + int(fields[12])) / tick,
                           (int(fields[13]) + int(fields[14])) / tick, int(fields[1]))
    return out


def _machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _descendants(root: int, stats: dict[int, tuple[str, float, float, int]]) -> set[int]:
    below = {root}
    grew = True
    while grew:
        found = {pid for pid, stat in stats.items() if stat[3] in below} - below
        below |= found
        grew = bool(found)
    return below - {root}


def _vm_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def vxsandbox_argv(config_path: str, log_level: str = "warning") -> list[str]:
    exe = shutil.which("vxsandbox")
    head = [exe] if exe else [sys.executable, "-m", "vxsandbox_core.cli"]
    return [*head, "run", "-c", config_path, "--log-level", log_level]


#: how long after its blob is in place a startup snapshot is taken as ready: the worker starts one
#: child from it as a check (well under a second) before handing it out
SNAPSHOT_CHECK = 1.0


async def wait_snapshot(worker: WorkerProcess, reactor: Any, timeout: float = 60) -> None:
    """Wait until the worker has made its startup snapshot: its blob is in the worker's own TMPDIR.

    Seen in the file system rather than in the worker's log, so every row runs at the same log
    level (warning): at info the worker would also write the app's four log lines per message.
    """
    assert worker.tmpdir is not None
    pattern = os.path.join(worker.tmpdir, "vxsandbox-snapshots-*", "*.blob")
    deadline = time.monotonic() + timeout
    while not glob.glob(pattern):
        if worker.popen.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.popen.returncode}:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker made no startup snapshot within {timeout}s:\n{worker.tail()}")
        await task.deferLater(reactor, 0.1, lambda: None)
    await task.deferLater(reactor, SNAPSHOT_CHECK, lambda: None)


async def wait_consumed(amqp: Amqp, queue: str, worker: WorkerProcess, reactor: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while await amqp.consumers(queue) < 1:
        if worker.popen.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.popen.returncode}:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not consuming {queue} after {timeout}s:\n{worker.tail()}")
        await task.deferLater(reactor, 0.1, lambda: None)


@dataclass
class Row:
    """One measured line of the table."""

    name: str
    #: one message every PACE seconds
    low: dict[str, float] = field(default_factory=dict)
    one: dict[str, float] = field(default_factory=dict)
    sat: dict[str, float] = field(default_factory=dict)
    #: worker process CPU milliseconds per message at saturation
    worker_cpu_ms: float = 0.0
    #: at saturation, CPU milliseconds per message of the worker, the broker, Redis, the transport and
    #: the children (the machine's total less those), and "busy": the machine's total over the wall
    #: time of the run times the cores
    cpu_ms: dict[str, float] = field(default_factory=dict)


async def measure(reactor: Any, name: str, argv: list[str], transport_name: str, app: str,
                  n_one: int, n_sat: int, warmup: int, tmp: str, repeat: int = 1,
                  snapshot: bool = False) -> Row:
    """Start a worker (and wait for its startup snapshot, if ``snapshot``), warm it up, time low load, one in
    flight, then saturation (best of ``repeat``)."""
    transport = Transport(reactor, transport_name)
    await transport.start()
    worker = WorkerProcess(argv, os.path.join(tmp, f"{transport_name}.log"),
                           os.path.join(tmp, f"{transport_name}.tmp") if snapshot else None)
    try:
        await wait_consumed(transport.amqp, f"{transport_name}.inbound", worker, reactor)
        if snapshot:
            await wait_snapshot(worker, reactor)
        timeout = max(60.0, n_sat / 10)
        for _ in range(warmup):
            transport.send(app)
        transport.latencies = []
        await transport.replies(warmup, timeout)
        row = Row(name)
        row.low = await transport.paced(app, PACED, PACE, timeout)
        row.one = await transport.one_in_flight(app, n_one, timeout)
        # Other work on a shared machine only ever slows a run down, so the best of a few is the figure.
        for _ in range(repeat):
            before, start = worker.cpu_breakdown(), time.perf_counter()
            sat = await transport.saturate(app, n_sat, timeout)
            after, wall = worker.cpu_breakdown(), time.perf_counter() - start
            if not row.sat or sat["msg_per_s"] > row.sat["msg_per_s"]:
                row.sat = sat
                used = {part: (after[part] - before[part]) * 1000 / n_sat for part in after}
                machine = used.pop("machine")
                row.cpu_ms = {**used, "children": max(0.0, machine - sum(used.values())),
                              "busy": machine * n_sat / 1000 / (wall * CORES)}
                row.worker_cpu_ms = row.cpu_ms["worker"]
        return row
    finally:
        await worker.stop(reactor)
        await transport.amqp.delete(*(f"{transport_name}.{q}" for q in
                                      ("inbound", "event", "outbound", "inbound.dead", "event.dead")))
        await transport.amqp.close()


class _Spawned(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


async def measure_spawns(reactor: Any, argv: list[str], runs: int, make: Any = _Spawned) -> dict[str, float]:
    """Spawn ``argv`` ``runs`` times to processEnded: median wall time and CPU per spawn (child + parent)."""
    walls = []
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(runs):
        proto = make()
        start = time.perf_counter()
        reactor.spawnProcess(proto, argv[0], argv, env={})
        await proto.ended
        walls.append(time.perf_counter() - start)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    child_cpu = (children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime) / runs
    parent_cpu = (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime) / runs
    return {"wall_ms": statistics.median(walls) * 1000, "child_cpu_ms": child_cpu * 1000,
            "parent_cpu_ms": parent_cpu * 1000, "ceiling_msg_per_s": CORES / (child_cpu + parent_cpu)}


async def node_spawn(reactor: Any, runs: int = 15) -> dict[str, float]:
    """Median wall time of spawnProcess(node -e 0) to processEnded, and CPU per spawn (child + parent)."""
    node = shutil.which("node") or "node"
    return await measure_spawns(reactor, [node, "-e", "0"], runs)


class _Fed(_Spawned):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def connectionMade(self) -> None:
        self.transport.write(self.data)
        self.transport.closeStdin()


async def runner_spawn(reactor: Any, runs: int = 15) -> dict[str, float]:
    """What a process per message really costs: the worker's own JS child (prlimit, hardening flags,
    runner.js) given the reply-only app and one message, to its exit; CPU per spawn (child + parent)."""
    from vxsandbox_js import JsSandbox
    worker = JsSandbox({"javascript": REPLY_APP, "sandbox_id": "bench", "transport_name": "bench"})
    api = worker._template_api()
    argv = [*rlimit_argv(worker.rlimits), worker.executable, *worker.sandbox_args(api)]
    lines = [{"cmd": "initialize", "javascript": REPLY_APP, "app_context": None,
              "filename": worker.app_filename(api)},
             {"cmd": "inbound-message", "msg": vumi_message("bench", 0, "+27831234567", "hi", "resume")}]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return await measure_spawns(reactor, argv, runs, lambda: _Fed(data))


async def clean_redis(prefix: str) -> None:
    import txredisapi
    conn = await txredisapi.Connection("127.0.0.1", 6379, reconnect=False)
    try:
        keys = await conn.keys(prefix + ":*")
        if keys:
            await conn.delete(keys)
    finally:
        await conn.disconnect()


# --- the whole run --------------------------------------------------------------------------------

async def benchmark(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="vxbench-")
    key_prefix = f"vxbench:{run_id}"
    scale = args.scale
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "cores": CORES,
        "load_before": os.getloadavg(), "node_spawn": await node_spawn(reactor),
        "runner_spawn": await runner_spawn(reactor), "rows": []}
    progress = (lambda *a: print(*a, file=sys.stderr, flush=True)) if not args.quiet else (lambda *a: None)
    progress(f"node -e 0 spawn: {results['node_spawn']}")
    progress(f"JS child spawn: {results['runner_spawn']}")
    me = os.path.abspath(__file__)
    floors = [("floor: RabbitMQ echo", "echo", "js", 300, 4000),
              (NODE_FLOOR, "node-echo", "js", 300, 2000)]
    if "vumigo" in args.apps:
        floors.append((VUMIGO_FLOOR, "node-vumigo", "vumigo", 200, 1000))
    for name, kind, floor_app, n_one, n_sat in floors:
        tn = f"vxbench_{run_id}_{kind.replace('-', '_')}"
        row = await measure(reactor, name, [sys.executable, me, "--serve", kind, tn], tn, floor_app,
                            int(n_one * scale) or 1, int(n_sat * scale) or 1, 20, tmp, args.repeat)
        progress(asdict(row))
        results["rows"].append(asdict(row))
    for app in args.apps:
        for mode in args.modes:
            tn = f"vxbench_{run_id}_{app}_{mode}"
            config_path = os.path.join(tmp, f"{tn}.json")  # JSON is YAML
            # The vumigo app is measured once the snapshot its worker makes by default is ready.
            snapshot = not args.no_snapshot and app == "vumigo"
            with open(config_path, "w") as f:
                json.dump(worker_config(app, mode, tn, key_prefix, snapshot, args.runs_per_child), f)
            n_one, n_sat = COUNTS[(app, mode)]
            warmup = 20 if mode == "warm" else 2
            argv = vxsandbox_argv(config_path)
            label = " (no snapshot)" if app == "vumigo" and args.no_snapshot else ""
            row = await measure(reactor, f"{app} {mode}{label}", argv, tn, app,
                                max(1, int(n_one * scale)), max(1, int(n_sat * scale)), warmup, tmp,
                                args.repeat if mode == "warm" else 1, snapshot)
            progress(asdict(row))
            results["rows"].append(asdict(row))
    if "vumigo" in args.apps:
        await clean_redis(key_prefix)
    results["load_after"] = os.getloadavg()
    results["ratios"] = ratios(results)
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def targets(rows: dict[str, Any]) -> dict[str, float]:
    """Issue 15's four ratios (where this run has both rows), and what the two warm ones ask of the toolkit.

    ``toolkit floor / fresh-vm floor`` is what ``vumigo warm / js warm`` would be if each app ran at its
    own floor. With js warm at 75 % of its floor, ``vumigo warm / js warm`` reaches 0.5 only where
    ``vumigo warm / toolkit floor`` (a row's own ratio below) reaches 0.375 over that ratio.
    """
    def sat(name: str) -> float:
        return float(rows[name]["sat"]["msg_per_s"])

    def p50(name: str) -> float:
        return float(rows[name]["low"]["p50_ms"])

    out: dict[str, float] = {}
    for key, a, b, value in (
            ("target: vumigo prefork / vumigo warm low-load p50 (<= 2)", "vumigo prefork", "vumigo warm", p50),
            ("target: vumigo cold / js cold low-load p50 (<= 1.5)", "vumigo cold", "js cold", p50),
            ("target: vumigo warm / js warm saturated (>= 0.5)", "vumigo warm", "js warm", sat),
            ("target: js warm / fresh-vm floor saturated (>= 0.75)", "js warm", NODE_FLOOR, sat),
            ("floors: toolkit floor / fresh-vm floor saturated", VUMIGO_FLOOR, NODE_FLOOR, sat)):
        if a in rows and b in rows:
            out[key] = value(a) / value(b)
    floors = out.get("floors: toolkit floor / fresh-vm floor saturated")
    if floors:
        out["floors: vumigo warm / toolkit floor needed for both warm targets"] = 0.5 * 0.75 / floors
    return out


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """The issue's targets, and every row as ratios to the floors measured in the same run."""
    rows = {r["name"]: r for r in results["rows"]}
    out: dict[str, float] = targets(rows)
    node_floor = rows.get(NODE_FLOOR)
    echo_floor = rows.get("floor: RabbitMQ echo")
    vumigo_floor = rows.get(VUMIGO_FLOOR)
    for name, row in rows.items():
        if name.startswith("floor"):
            continue
        if vumigo_floor and name.startswith("vumigo"):
            out[f"{name} / toolkit floor"] = row["sat"]["msg_per_s"] / vumigo_floor["sat"]["msg_per_s"]
            out[f"{name} low-load p50 / toolkit floor's"] = row["low"]["p50_ms"] / vumigo_floor["low"]["p50_ms"]
        if node_floor:
            out[f"{name} / node-echo floor"] = row["sat"]["msg_per_s"] / node_floor["sat"]["msg_per_s"]
        if echo_floor:
            out[f"{name} / RabbitMQ echo floor"] = row["sat"]["msg_per_s"] / echo_floor["sat"]["msg_per_s"]
        if name.endswith(("cold", "prefork")) and not name.startswith("python"):
            out[f"{name} / node -e 0 spawn ceiling"] = (row["sat"]["msg_per_s"]
                                                       / results["node_spawn"]["ceiling_msg_per_s"])
            out[f"{name} / JS child spawn ceiling"] = (row["sat"]["msg_per_s"]
                                                      / results["runner_spawn"]["ceiling_msg_per_s"])
    return out


def print_table(results: dict[str, Any]) -> None:
    spawn = results["node_spawn"]
    print(f"date {results['date']} UTC, {results['cores']} cores, load before "
          f"{results['load_before'][0]:.2f}, after {results['load_after'][0]:.2f}")
    for label, spawn in (("bare `node -e 0`", results["node_spawn"]),
                         ("JS child (prlimit, flags, runner.js, initialize, one message)", results["runner_spawn"])):
        print(f"{label} spawn to exit: {spawn['wall_ms']:.1f} ms wall (median), {spawn['child_cpu_ms']:.1f} ms "
              f"child CPU + {spawn['parent_cpu_ms']:.1f} ms parent CPU; spawn-bound ceiling "
              f"{spawn['ceiling_msg_per_s']:.0f} msg/s on {results['cores']} cores")
    print()
    print(f"| {'what':36} | {'low load p50 ms':>15} | {'1 in flight msg/s':>17} | {'p50 ms':>7} | {'p99 ms':>7} "
          f"| {'saturated msg/s':>15} | {'p50 ms':>7} | {'p99 ms':>7} | {'worker CPU ms/msg':>17} |")
    widths = (36, 15, 17, 7, 7, 15, 7, 7, 17)
    print("|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|")
    for r in results["rows"]:
        one, sat = r["one"], r["sat"]
        print(f"| {r['name']:36} | {r['low']['p50_ms']:15.2f} | {one['msg_per_s']:17.1f} | {one['p50_ms']:7.2f} "
              f"| {one['p99_ms']:7.2f} "
              f"| {sat['msg_per_s']:15.1f} | {sat['p50_ms']:7.1f} | {sat['p99_ms']:7.1f} "
              f"| {r['worker_cpu_ms']:17.2f} |")
    print()
    print("CPU ms per message at saturation (best run), and how busy the cores were:")
    print()
    parts = ("worker", "children", "broker", "redis", "transport")
    print("| what | " + " | ".join(parts) + " | total | cores busy |")
    print("|---|" + "---:|" * (len(parts) + 2))
    for r in results["rows"]:
        cpu = r["cpu_ms"]
        print(f"| {r['name']} | " + " | ".join(f"{cpu[p]:.2f}" for p in parts)
              + f" | {sum(cpu[p] for p in parts):.2f} | {cpu['busy']:.0%} |")
    print()
    for name, value in results["ratios"].items():
        print(f"{name}: {value:.2f}" if name.startswith(("target", "floors")) else f"{name}: {value:.0%}")


# --- RSS over a long warm run -------------------------------------------------------------------------

async def rss_run(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``--rss`` warm messages of ``--rss-app``; the worker's RSS and its node children's at each tenth.

    For ``vumigo`` one child serves every message (prefetch ``--runs-per-child``, 1 by default, and
    ``messages_per_process`` above the count), so the last sample is the RSS of a warm child after
    that many toolkit messages. The ``js`` run keeps the benchmark's prefetch and in flight 200 at a
    time, children retired every 1000 messages: the worker's RSS is the figure there.
    """
    run_id = uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="vxbench-rss-")
    tn = f"vxbench_{run_id}_rss"
    app = args.rss_app
    total = args.rss
    snapshot = app == "vumigo" and not args.no_snapshot
    config = worker_config(app, "warm", tn, f"vxbench:{run_id}", snapshot, args.runs_per_child)
    window = 200
    if app == "vumigo":
        config.update(amqp_prefetch_count=args.runs_per_child, messages_per_process=total + 1)
        window = 20
    config_path = os.path.join(tmp, "worker.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    transport = Transport(reactor, tn)
    await transport.start()
    worker = WorkerProcess(vxsandbox_argv(config_path), os.path.join(tmp, "worker.log"),
                           os.path.join(tmp, "worker.tmp") if snapshot else None)
    samples: list[tuple[int, int, list[int]]] = []
    checkpoint = max(total // 10, 1)

    def sample(n: int) -> None:
        samples.append((n, worker.rss_kib(), worker.node_rss_kib()))
        print(f"{n} messages: worker RSS {samples[-1][1]} KiB, node children {samples[-1][2]} KiB",
              file=sys.stderr, flush=True)

    try:
        await wait_consumed(transport.amqp, f"{tn}.inbound", worker, reactor)
        if snapshot:
            # Otherwise the first child starts without it and serves every message.
            await wait_snapshot(worker, reactor)
        transport.latencies = []
        start = time.perf_counter()
        sent = 0
        while sent < total:
            batch = min(window, total - sent)
            for _ in range(batch):
                transport.send(app)
            sent += batch
            await transport.replies(sent - window // 2 if sent < total else total, 120)
            if sent % checkpoint < window and len(samples) < sent // checkpoint:
                sample(len(transport.latencies))
        await transport.replies(total, 120)
        elapsed = time.perf_counter() - start
        if not samples or samples[-1][0] != total:
            sample(total)
    finally:
        await worker.stop(reactor)
        await transport.amqp.delete(*(f"{tn}.{q}" for q in ("inbound", "event", "outbound", "inbound.dead",
                                                            "event.dead")))
        await transport.amqp.close()
        await clean_redis(f"vxbench:{run_id}")
        shutil.rmtree(tmp, ignore_errors=True)
    at_10 = min(samples, key=lambda s: abs(s[0] - total // 10))
    out: dict[str, Any] = {"app": app, "messages": total, "seconds": elapsed, "msg_per_s": total / elapsed,
                           "samples_kib": samples, "rss_growth_after_10pct": samples[-1][1] / at_10[1] - 1}
    if app == "vumigo" and at_10[2] and samples[-1][2]:
        out["child_rss_growth_after_10pct"] = samples[-1][2][0] / at_10[2][0] - 1
    return out


def _rss_text(out: dict[str, Any]) -> str:
    lines = [f"{n} messages: worker RSS {kib / 1024:.1f} MiB, node children "
             f"{', '.join(f'{c / 1024:.1f}' for c in children) or 'none'} MiB"
             for n, kib, children in out["samples_kib"]]
    lines.append(f"{out['app']}: {out['messages']} messages in {out['seconds']:.0f}s ({out['msg_per_s']:.0f} msg/s); "
                 f"worker RSS at the end vs after a tenth: {out['rss_growth_after_10pct']:+.1%}")
    if "child_rss_growth_after_10pct" in out:
        lines.append(f"the warm child's RSS at the end vs after a tenth: {out['child_rss_growth_after_10pct']:+.1%}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--apps", default="js,vumigo,python", help="comma-separated: js, vumigo, python")
    parser.add_argument("--modes", default="cold,prefork,warm", help="comma-separated: cold, prefork, warm")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count (e.g. 0.2)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="saturation runs of the floors and warm modes; the best counts (default 3)")
    parser.add_argument("--rss", type=int, default=0, metavar="N",
                        help="instead: N warm messages, printing the worker's and its node children's RSS at "
                             "each tenth")
    parser.add_argument("--rss-app", default="js", choices=("js", "vumigo"),
                        help="the --rss run's app: js (reply-only, children retired every 1000 messages) or "
                             "vumigo (one warm child serves all N)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="run the vumigo app with snapshot: false (by default its worker makes a startup "
                             "snapshot, and the app is measured once it is ready)")
    parser.add_argument("--runs-per-child", type=int, default=1, metavar="N",
                        help="warm children serve up to N messages at once (the config's runs_per_child)")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "TRANSPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        task.react(lambda reactor: defer.ensureDeferred(serve_floor(reactor, *args.serve)))
        return
    args.apps = [a for a in args.apps.split(",") if a]
    args.modes = [m for m in args.modes.split(",") if m]
    if "vumigo" in args.apps and not os.path.isdir(os.path.join(ROOT, "examples", "vumigo_app", "node_modules")):
        sys.exit("examples/vumigo_app/node_modules is missing: run `npm ci --prefix examples/vumigo_app`")
    out: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        # react() exits the process when this returns, so the results are printed here.
        if args.rss:
            out.update(await rss_run(reactor, args))
            print(json.dumps(out) if args.json else _rss_text(out))
        else:
            out.update(await benchmark(reactor, args))
            if args.json:
                print(json.dumps(out))
            else:
                print_table(out)
    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
