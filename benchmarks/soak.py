"""Soak benchmark: a real worker on RabbitMQ and Redis serving mixed well-behaved and abusive apps for a set time.

Run by hand (RabbitMQ on 127.0.0.1:5672, Redis on 127.0.0.1:6379, node on PATH)::

    python benchmarks/soak.py --seconds 600 [--isolation none|bwrap] [--rate 20]

A transport publishes user messages at ``--rate`` per second: nine in ten
are well-behaved (an ``ok`` reply, or a ``kv`` visit counter then a reply),
one in ten attacks (endless loop, memory bomb, stdout flood, endless line,
request flood, fork attempt, bogus replies, invalid UTF-8, and the attempts
to exhaust the worker: replies never read, stderr and log floods, ever-new
metric names, endless response headers and http requests never answered,
the last two against a hostile server in the transport's process). At the end it
waits for every delivery to be settled and reports messages published and
processed, replies, dead letters, sandbox kills by reason, messages lost
(published but never settled, or well-behaved and never answered), the size
of the worker's Prometheus exposition and the worker's RSS at start, after
the first minute and at the end. The transport
runs in a process of its own, so the RSS measured is the worker's alone.
Exit status 1 when a message was lost.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any

from twisted.internet import defer, protocol, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from prometheus_client.exposition import generate_latest  # noqa: E402

from tests.faults.harness import ABUSE_APP, HostileHttpServer, OwnerLog, vumi_message  # noqa: E402
from vxsandbox_core import hookimpl  # noqa: E402
from vxsandbox_core.brokers.amqp import AmqpBroker  # noqa: E402
from vxsandbox_core.brokers.amqp.admin import delete_queues, queue_length  # noqa: E402
from vxsandbox_core.observability import ObservabilityPlugin  # noqa: E402
from vxsandbox_core.registry import resolve_worker  # noqa: E402
from vxsandbox_core.service import WorkerService  # noqa: E402
from vxsandbox_core.testing import hooks_with  # noqa: E402

GOOD = ["ok", "ok", "kv"]
ABUSE = ["loop", "memory", "stdout-flood", "endless-line", "request-flood", "fork", "bogus-replies", "bad-utf8",
         "deaf", "stderr-flood", "log-flood", "metric-flood", "header-flood", "http-hold"]


def rss_kib() -> int:
    """The worker's (this process's) resident set size in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Kills:
    """Counts sandbox runs by how they ended."""

    def __init__(self) -> None:
        self.ends: Counter[str] = Counter()

    @hookimpl
    def run_ended(self, api: Any, result: Any) -> None:
        self.ends[result.describe()] += 1


async def transport(reactor: Any, args: argparse.Namespace) -> int:
    """The Vumi transport's side, in its own process: publish at the rate, count replies, report JSON."""
    tn = args.transport
    broker = AmqpBroker(connection_name=f"vxsandbox soak transport {tn}")
    await broker.connect()
    replies: Counter[str] = Counter()

    async def on_reply(delivery: Any) -> None:
        replies[json.loads(delivery.body)["in_reply_to"]] += 1
        await delivery.ack()
    await broker.consume(f"{tn}.outbound", on_reply)
    hostile = HostileHttpServer()
    rng = random.Random(args.seed)
    sent: dict[str, str] = {}
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        batch = []
        for _ in range(args.rate):
            abusive = rng.random() < 0.1
            content = rng.choice(ABUSE if abusive else GOOD)
            msg = vumi_message(tn, content, sandbox_id="attacker" if abusive else "good",
                               transport_metadata={"url": hostile.url})
            sent[msg["message_id"]] = content
            batch.append(defer.Deferred.fromCoroutine(broker.publish(f"{tn}.inbound", json.dumps(msg).encode())))
        await defer.gatherResults(batch)
        print(json.dumps({"published": len(sent), "replies": sum(replies.values())}), flush=True)
        await task.deferLater(reactor, 1.0, lambda: None)
    # Drain: wait while replies still come (a stall of a minute ends the wait).
    good = [m for m, c in sent.items() if c in GOOD]
    progress, last_change = -1, time.monotonic()
    while any(not replies[m] for m in good) and time.monotonic() - last_change < 60:
        if sum(replies.values()) != progress:
            progress, last_change = sum(replies.values()), time.monotonic()
        await task.deferLater(reactor, 0.5, lambda: None)
    await task.deferLater(reactor, 2.0, lambda: None)
    print(json.dumps({"done": True, "published": len(sent), "well_behaved": len(good),
                      "replies": sum(replies.values()), "answered": len(replies),
                      "unanswered": sum(1 for m in good if not replies[m])}), flush=True)
    await broker.close()
    await hostile.stop()
    return 0


class TransportProcess(protocol.ProcessProtocol):
    """The transport child: keeps its latest JSON status line."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.status = json.loads(line)

    def errReceived(self, data: bytes) -> None:
        sys.stderr.write(data.decode("utf-8", "replace"))

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


async def soak(reactor: Any, args: argparse.Namespace) -> int:
    """The worker's side, in this process (so its RSS is the worker's alone)."""
    tn = f"vxsoak_{uuid.uuid4().hex[:8]}"
    config: dict[str, Any] = {
        "worker": "js", "transport_name": tn, "sandbox_id": "good", "javascript": ABUSE_APP,
        "app_context": "{require: require}", "timeout": args.timeout, "amqp_prefetch_count": 20,
        "isolation": args.isolation, "max_requests_per_run": 1000,
        "messages_per_process": args.messages_per_process,
        "sandbox": {
            "log": {"cls": f"{OwnerLog.__module__}:OwnerLog"},
            "kv": {"cls": "kv", "redis_manager": {"url": "redis://127.0.0.1:6379/0", "key_prefix": f"vxsoak:{tn}"}},
            "outbound": {"cls": "outbound"},
            "metrics": {"cls": "metrics"},
            "http": {"cls": "http", "allowed_hosts": ["127.0.0.1"], "timeout": 2},
        },
    }
    kills = Kills()
    exporter = ObservabilityPlugin()
    broker = AmqpBroker(prefetch_count=20, connection_name=f"vxsandbox soak worker {tn}")
    worker = resolve_worker("js")(config, broker=broker, hooks=hooks_with(kills, exporter))
    service = WorkerService(worker, broker)
    await service.start()
    owner_log = worker.resources.resources["log"]
    rss_start = rss_kib()
    print(f"soak {tn}: {args.seconds}s at {args.rate}/s, isolation {args.isolation}, messages_per_process "
          f"{args.messages_per_process}, worker RSS at start {rss_start} KiB", flush=True)
    child = TransportProcess()
    argv = [sys.executable, os.path.abspath(__file__), "--transport", tn, "--seconds", str(args.seconds),
            "--rate", str(args.rate), "--seed", str(args.seed)]
    reactor.spawnProcess(child, sys.executable, argv, env=os.environ.copy())
    started = time.monotonic()
    next_report = started + 60
    rss_warm = 0
    try:
        while not child.ended.called:
            await task.deferLater(reactor, 1.0, lambda: None)
            # Owner log lines are kept in memory by the test resource; drop them so only the worker counts.
            owner_log.lines.clear()
            if time.monotonic() >= next_report:
                next_report += 60
                # The first minute fills imports and caches; growth after it is what a leak shows as.
                rss_warm = rss_warm or rss_kib()
                print(f"  {time.monotonic() - started:5.0f}s: published {child.status.get('published')}, settled "
                      f"{sum(service.counts.values())}, replies {child.status.get('replies')}, "
                      f"worker RSS {rss_kib()} KiB", flush=True)
        report = child.status
        published = int(report.get("published", 0))
        last, last_change = -1, time.monotonic()
        while sum(service.counts.values()) < published and time.monotonic() - last_change < 60:
            if sum(service.counts.values()) != last:
                last, last_change = sum(service.counts.values()), time.monotonic()
            await task.deferLater(reactor, 0.5, lambda: None)
        rss_end = rss_kib()
        dead = await queue_length(broker, f"{tn}.inbound.dead")
        settled = sum(service.counts.values())
        lost = (published - settled) + int(report.get("unanswered", 0)) + (0 if report.get("done") else 1)
        growth = 100.0 * (rss_end - rss_start) / rss_start
        warm_growth = 100.0 * (rss_end - rss_warm) / rss_warm if rss_warm else 0.0
        print(f"published {published} ({report.get('well_behaved')} well-behaved, "
              f"{published - int(report.get('well_behaved', 0))} abusive)")
        print(f"processed (settled) {settled}: {dict(service.counts)}")
        print(f"replies {report.get('replies')} to {report.get('answered')} messages; well-behaved unanswered "
              f"{report.get('unanswered')}")
        print(f"dead letters {dead}")
        print("runs by end: " + ", ".join(f"{k} {v}" for k, v in kills.ends.most_common()))
        print(f"lost {lost}")
        exposition = generate_latest(exporter.registry)
        print(f"/metrics {len(exposition)} bytes, {exposition.count(b'vxsandbox_app_metric{')} app metric series, "
              f"{exporter.registry.get_sample_value('vxsandbox_app_metric_overflow_fires_total'):.0f} fires "
              "folded into _overflow")
        print(f"worker RSS start {rss_start} KiB, after 60 s {rss_warm} KiB, end {rss_end} KiB, growth "
              f"{growth:+.1f}% from start, {warm_growth:+.1f}% from 60 s")
        return 0 if lost == 0 else 1
    finally:
        await service.stop()
        # The service closed its broker; the queues go through a connection of their own.
        cleaner = AmqpBroker(connection_name=f"vxsandbox soak cleanup {tn}")
        await cleaner.connect()
        await delete_queues(cleaner, f"{tn}.inbound", f"{tn}.event", f"{tn}.outbound")
        await cleaner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long to publish (default 60)")
    parser.add_argument("--rate", type=int, default=20, help="messages published per second (default 20)")
    parser.add_argument("--timeout", type=float, default=3, help="the worker's sandbox timeout (default 3)")
    parser.add_argument("--isolation", choices=("auto", "none", "bwrap"), default="auto",
                        help="the workers' isolation (default auto, the product's default)")
    parser.add_argument("--messages-per-process", type=int, default=1,
                        help="messages a child serves before it is retired (default 1: a child per message)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--transport", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run(reactor: Any) -> None:
        code = await (transport(reactor, args) if args.transport else soak(reactor, args))
        if code:
            raise SystemExit(code)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
