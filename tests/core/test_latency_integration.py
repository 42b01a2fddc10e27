"""Reply latency through the real RabbitMQ on 127.0.0.1:5672 with a warm child, a couple of messages in flight.

A lost ``TCP_NODELAY`` on a broker connection shows up here first. Nagle's
algorithm holds a small write back while an earlier one is unacknowledged,
and RabbitMQ acknowledges a lone ``basic.ack`` only with its delayed ACK
(about 40 ms on Linux). Two messages of one sandbox_id with ``ordered: true``
make that happen on every pair: the first run ends and its delivery is
acked, the second run starts at once in the same warm child, and its
``basic.publish`` follows the ack within a millisecond, with nothing from
the broker in between. With TCP_NODELAY a pair takes a few milliseconds;
without it, over 40.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from vxsandbox_core.brokers.amqp import AmqpBroker
from vxsandbox_core.brokers.amqp.admin import delete_queues
from vxsandbox_core.service import WorkerService
from vxsandbox_core.testing import echo_worker_config, hooks_with
from vxsandbox_core.worker import Sandbox

pytestmark = pytest.mark.rabbitmq

#: pairs of messages timed one pair after another, after the first few (which start the child)
PAIRS = 25
WARMUP = 3
#: the median time from publishing a pair to its second reply; a Nagle stall alone costs about 40 ms,
#: and a slow machine running the rest of the suite beside this test has shown medians of 27 ms
MAX_MEDIAN_SECONDS = 0.035


def vumi_message(transport: str, n: int) -> dict[str, Any]:
    """A user message as a Vumi transport puts it on the wire."""
    return {
        "message_version": "20110921", "message_type": "user_message", "message_id": f"m-{n}-{uuid.uuid4().hex}",
        "to_addr": "*120*8864#", "from_addr": "+27831234567", "in_reply_to": None, "session_event": "resume",
        "content": f"msg {n}", "transport_name": transport, "transport_type": "ussd",
        "transport_metadata": {}, "helper_metadata": {}, "routing_metadata": {}, "group": None,
        "provider": None, "timestamp": "2026-11-28 10:00:00.000000",
    }


class OneInFlightLatencyTests(TestCase):
    timeout = 120

    async def test_median_reply_latency_with_a_warm_child_is_a_few_milliseconds(self) -> None:
        """Twenty-five pairs of messages, one pair at a time, each answered by a warm child in a median under 20 ms."""
        tn = f"vxlatency_{uuid.uuid4().hex[:12]}"
        transport = AmqpBroker(connection_name=f"vxsandbox-test transport {tn}")
        await transport.connect()
        broker = AmqpBroker(prefetch_count=20, connection_name=f"vxsandbox-test worker {tn}")
        worker = Sandbox(echo_worker_config(tn, messages_per_process=1000, ordered=True),
                         broker=broker, hooks=hooks_with())
        service = WorkerService(worker, broker)

        async def cleanup() -> None:
            await service.stop()
            await delete_queues(transport, f"{tn}.inbound", f"{tn}.event", f"{tn}.outbound")
            await transport.close()
        self.addCleanup(lambda: Deferred.fromCoroutine(cleanup()))
        await service.start()

        waiting: dict[str, Deferred[float]] = {}

        async def on_reply(delivery: Any) -> None:
            arrived = time.perf_counter()
            await delivery.ack()
            d = waiting.pop(json.loads(delivery.body)["in_reply_to"], None)
            if d is not None:
                d.callback(arrived)

        await transport.consume(f"{tn}.outbound", on_reply)
        latencies = []
        for n in range(WARMUP + PAIRS):
            replies = []
            publishes = []
            sent = time.perf_counter()
            for msg in (vumi_message(tn, 2 * n), vumi_message(tn, 2 * n + 1)):
                replied: Deferred[float] = Deferred()
                replied.addTimeout(10, reactor)
                waiting[msg["message_id"]] = replied
                replies.append(replied)
                publishes.append(Deferred.fromCoroutine(
                    transport.publish(f"{tn}.inbound", json.dumps(msg).encode())))
            for d in publishes:
                await d
            latencies.append(max([await d for d in replies]) - sent)
        timed = latencies[WARMUP:]
        median = statistics.median(timed)
        self.assertLess(median, MAX_MEDIAN_SECONDS,
                        f"median one-in-flight latency {median * 1000:.1f} ms; slowest "
                        f"{max(timed) * 1000:.1f} ms (is TCP_NODELAY still set on broker connections?)")
        self.assertEqual(worker.pool.spawned, 1)
